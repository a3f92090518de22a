//! Image names as users type them: `NAME[:TAG]`, the tag `latest` when none is given. A name is
//! lowercase letters, digits and `._-/` (Docker's repository rules, without a registry host);
//! the pair is stored as `NAME:TAG` in `org.opencontainers.image.ref.name`.

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
        let name_ok = !name.is_empty()
            && name.len() <= 255
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
            && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && !name.contains("//")
            && !name.ends_with('/');
        if !name_ok {
            bail!(
                "invalid image name '{text}': use lowercase letters, digits and . _ - / (for example hello or course/hello:1.0)"
            );
        }
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !tag.starts_with(['.', '-']);
        if !tag_ok {
            bail!("invalid tag in '{text}': a tag is up to 128 letters, digits and . _ -");
        }
        Ok(Reference { name: name.to_string(), tag: tag.to_string() })
    }
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
        for bad in ["", "Hello", "a b", "x:", "x:-1", "/x", "x/", "a//b", "x:tag with space", ":tag"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }
}
