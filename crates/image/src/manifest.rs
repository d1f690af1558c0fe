//! OCI and Docker v2 manifests, indexes and image configs: only the fields kumo uses.

use crate::digest::Digest;
use crate::error::{invalid, ImageError};
use crate::store::ImageConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The manifest media types a pull accepts.
pub(crate) const ACCEPTED: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// A content descriptor.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    pub(crate) fn digest(&self) -> Result<Digest, ImageError> {
        Digest::parse(&self.digest)
    }

    pub(crate) fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// An image index / manifest list.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// What a manifest blob turned out to be.
pub(crate) enum Parsed {
    Manifest(Manifest),
    Index(Index),
}

/// Parses a manifest or an index, by its `mediaType` or, when absent, its shape.
pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed, ImageError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid("manifest", e))?;
    let media_type = value.get("mediaType").and_then(|m| m.as_str());
    let is_index = match media_type {
        Some(OCI_INDEX) | Some(DOCKER_LIST) => true,
        Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
        Some(other) if value.get("manifests").is_none() && value.get("config").is_none() => {
            return Err(invalid(
                "manifest",
                format!("unsupported media type {other}"),
            ));
        }
        _ => value.get("manifests").is_some(),
    };
    if is_index {
        serde_json::from_value(value)
            .map(Parsed::Index)
            .map_err(|e| invalid("image index", e))
    } else {
        if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
            return Err(invalid(
                "manifest",
                "docker schema 1 manifests are not supported",
            ));
        }
        serde_json::from_value(value)
            .map(Parsed::Manifest)
            .map_err(|e| invalid("manifest", e))
    }
}

/// The host's platform in OCI terms: (`linux`, `amd64`), (`linux`, `arm64`), ...
pub(crate) fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "arm" => "arm",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    ("linux", arch)
}

/// Picks the manifest for `os`/`arch` from an index; an index whose only entry names no
/// platform (as OCI layouts often do) yields that entry.
pub(crate) fn select<'a>(index: &'a Index, os: &str, arch: &str) -> Option<&'a Descriptor> {
    let exact = index.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch)
    });
    exact.or_else(|| match index.manifests.as_slice() {
        [only] if only.platform.is_none() => Some(only),
        _ => None,
    })
}

/// An image config (`application/vnd.oci.image.config.v1+json` or Docker's).
#[derive(Debug, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Parses a config blob into the container defaults and the layers' uncompressed digests.
pub(crate) fn parse_config(bytes: &[u8]) -> Result<(ImageConfig, Vec<Digest>), ImageError> {
    let file: ConfigFile = serde_json::from_slice(bytes).map_err(|e| invalid("image config", e))?;
    let c = file.config.unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let config = ImageConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: non_empty(c.working_dir),
        user: non_empty(c.user),
        exposed_ports: c.exposed_ports.unwrap_or_default().into_keys().collect(),
    };
    let diff_ids = file
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((config, diff_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest_char: char, platform: Option<(&str, &str)>) -> Descriptor {
        Descriptor {
            media_type: Some(OCI_MANIFEST.into()),
            digest: format!("sha256:{}", digest_char.to_string().repeat(64)),
            size: 1,
            platform: platform.map(|(os, arch)| Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: None,
            }),
            annotations: None,
        }
    }

    #[test]
    fn index_selection_picks_the_host_platform() {
        let index = Index {
            manifests: vec![
                entry('a', Some(("linux", "arm64"))),
                entry('b', Some(("unknown", "unknown"))),
                entry('c', Some(("linux", "amd64"))),
            ],
        };
        assert!(select(&index, "linux", "amd64")
            .unwrap()
            .digest
            .ends_with('c'));
        assert!(select(&index, "linux", "arm64")
            .unwrap()
            .digest
            .ends_with('a'));
        assert!(select(&index, "linux", "s390x").is_none());
        let single = Index {
            manifests: vec![entry('d', None)],
        };
        assert!(select(&single, "linux", "amd64")
            .unwrap()
            .digest
            .ends_with('d'));
    }

    #[test]
    fn config_fields_are_exposed() {
        let json = br#"{"architecture":"amd64","os":"linux",
            "config":{"Entrypoint":["/bin/sh","-c"],"Cmd":null,"Env":["PATH=/bin"],
                      "WorkingDir":"/srv","User":"1000:1000","ExposedPorts":{"80/tcp":{}}},
            "rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;
        let (c, diff_ids) = parse_config(json).unwrap();
        assert_eq!(c.entrypoint, vec!["/bin/sh", "-c"]);
        assert!(c.cmd.is_empty());
        assert_eq!(c.env, vec!["PATH=/bin"]);
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.exposed_ports, vec!["80/tcp"]);
        assert_eq!(diff_ids.len(), 1);
        let bad = br#"{"rootfs":{"diff_ids":["md5:x"]}}"#;
        assert!(parse_config(bad).is_err());
    }

    #[test]
    fn manifests_and_indexes_are_told_apart() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{"mediaType":"x","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}"#;
        assert!(matches!(parse(m), Ok(Parsed::Manifest(_))));
        let i = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(parse(i), Ok(Parsed::Index(_))));
        let v1 = br#"{"schemaVersion":1,"config":{"digest":"x"}}"#;
        assert!(parse(v1).is_err());
        assert!(parse(b"not json").is_err());
    }
}
