//! Image names as users type them: `NAME[:TAG]`, the tag `latest` when none is given. Names and
//! tags follow the grammar of Docker and the OCI distribution spec (without a registry host), so
//! every name cvm accepts is one skopeo and Docker accept too: path components of lowercase
//! letters and digits joined by `.`, `_`, `__` or dashes, separated by `/`; a tag of up to 128
//! letters, digits, `_`, `.` and `-`, not starting with `.` or `-`. The pair is stored as
//! `NAME:TAG` in `org.opencontainers.image.ref.name`.

use std::fmt;

use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    pub name: String,
    pub tag: String,
}

pub const DEFAULT_TAG: &str = "latest";

impl Reference {
    pub fn parse(text: &str) -> Result<Reference> {
        // A colon after the last slash starts the tag.
        let last_slash = text.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match text[last_slash..].find(':') {
            Some(i) => (&text[..last_slash + i], &text[last_slash + i + 1..]),
            None => (text, DEFAULT_TAG),
        };
        let name_ok = !name.is_empty() && name.len() <= 255 && name.split('/').all(component_ok);
        if !name_ok {
            bail!(
                "invalid image name '{text}': use lowercase letters, digits and . _ - / (for example hello or course/hello:1.0)"
            );
        }
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && tag.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !tag_ok {
            bail!("invalid tag in '{text}': a tag is up to 128 letters, digits and . _ -");
        }
        Ok(Reference { name: name.to_string(), tag: tag.to_string() })
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: alphanumeric runs joined by one separator each.
fn component_ok(part: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = part.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &part[start..i];
        if !(separator == "." || separator == "_" || separator == "__" || separator.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert_eq!(Reference::parse("hello").unwrap().to_string(), "hello:latest");
        assert_eq!(
            Reference::parse("course/hello:1.0").unwrap(),
            Reference { name: "course/hello".into(), tag: "1.0".into() }
        );
        assert!(Reference::parse("my-app__x.y/web:v1.0_rc").is_ok());
        for bad in [
            "",
            "Hello",
            "a b",
            "x:",
            "x:-1",
            "/x",
            "x/",
            "a//b",
            "x:tag with space",
            ":tag",
            "a/../b:1",
            "a..b",
            "a.-b",
            "x/.wh.y",
            "x:.t",
            "-a",
            "a-",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }
}
