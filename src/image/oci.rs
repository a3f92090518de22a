//! The OCI image format's JSON documents, as cvm reads and writes them: the image layout's
//! `oci-layout` and `index.json`, a manifest, an image config, and the descriptors that point
//! from one to the other by digest. Field names follow the image spec (camelCase, and the
//! config's capitalised `Entrypoint`, `Cmd`, `Env`). Fields cvm does not know are kept.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker's media types, which skopeo and registries also use for the same documents.
pub const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const LAYOUT_VERSION: &str = "1.0.0";

/// A pointer to a blob: its media type, digest and size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            annotations: BTreeMap::new(),
            extra: serde_json::Map::new(),
        }
    }

    /// The image name this entry of an index carries, if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(ANNOTATION_REF_NAME).map(String::as_str)
    }
}

/// `oci-layout`: marks a directory as an OCI image layout.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayoutMarker {
    pub image_layout_version: String,
}

/// `index.json`: the images of a layout, each a manifest descriptor named by an annotation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            schema_version: 2,
            media_type: Some(MEDIA_INDEX.into()),
            manifests: Vec::new(),
            extra: Default::default(),
        }
    }
}

/// An image manifest: its config and its layers, bottom first.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// What a container made from the image runs (the image config's `config` object).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "Entrypoint", default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The layers' uncompressed digests, bottom first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// One step of how the image was made (`cvm image history`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// The image config.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub config: RunConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ImageConfig {
    /// The history entries that made a layer, in layer order (empty-layer steps left out).
    pub fn layer_history(&self) -> Vec<Option<&History>> {
        let mut steps = self.history.iter().filter(|h| !h.empty_layer);
        self.rootfs.diff_ids.iter().map(|_| steps.next()).collect()
    }

    /// What a container runs: the entrypoint, then `args` if any were given, else `Cmd`.
    pub fn argv(&self, args: &[String]) -> Vec<String> {
        let mut argv = self.config.entrypoint.clone().unwrap_or_default();
        if args.is_empty() {
            argv.extend(self.config.cmd.clone().unwrap_or_default());
        } else {
            argv.extend(args.iter().cloned());
        }
        argv
    }
}

/// The media types cvm unpacks as layers: gzip tar (OCI and Docker) and plain tar.
pub fn is_layer(media_type: &str) -> bool {
    matches!(media_type, MEDIA_LAYER_GZIP | MEDIA_LAYER_TAR | MEDIA_DOCKER_LAYER_GZIP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_keeps_fields_cvm_does_not_know() {
        let text = r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/hi"],"User":"1000"},
            "rootfs":{"type":"layers","diff_ids":[]},"os.version":"x"}"#;
        let config: ImageConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config.config.entrypoint.as_deref(), Some(&["/bin/hi".to_string()][..]));
        let again = serde_json::to_value(&config).unwrap();
        assert_eq!(again["config"]["User"], "1000");
        assert_eq!(again["os.version"], "x");
    }

    #[test]
    fn arguments_replace_cmd_and_follow_the_entrypoint() {
        let mut config = ImageConfig::default();
        config.config.entrypoint = Some(vec!["/bin/busybox".into()]);
        config.config.cmd = Some(vec!["echo".into(), "default".into()]);
        assert_eq!(config.argv(&[]), ["/bin/busybox", "echo", "default"]);
        assert_eq!(config.argv(&["ls".into()]), ["/bin/busybox", "ls"]);
    }
}
