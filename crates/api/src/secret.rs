//! The Secret kind (`v1`): small named values, base64-encoded in `data`, for example registry
//! credentials (`type: kubernetes.io/dockerconfigjson`) that pods name in `imagePullSecrets`.

use crate::meta::ObjectMeta;
use crate::validation::Errors;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The type of opaque, user-defined data.
pub const SECRET_TYPE_OPAQUE: &str = "Opaque";
/// Registry credentials in Docker's `config.json` format under [`DOCKER_CONFIG_JSON_KEY`].
pub const SECRET_TYPE_DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// The key of a registry-credentials secret's data.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `Opaque` when not given.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Values, base64-encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Plain-text values, merged into `data` when the secret is stored (write-only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub string_data: BTreeMap<String, String>,
}

/// One registry's credentials in a Docker config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// base64 of `username:password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerConfig {
    #[serde(default)]
    pub auths: BTreeMap<String, DockerAuth>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// base64 of `bytes`, as `data` holds them.
pub fn encode_value(bytes: &[u8]) -> String {
    b64().encode(bytes)
}

impl Secret {
    /// The decoded value of `key`.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.data.get(key).and_then(|v| b64().decode(v).ok())
    }

    /// Moves `stringData` into `data` (as the API server stores secrets).
    pub fn normalize(&mut self) {
        for (k, v) in std::mem::take(&mut self.string_data) {
            self.data.insert(k, encode_value(v.as_bytes()));
        }
        if self.type_.is_none() {
            self.type_ = Some(SECRET_TYPE_OPAQUE.to_string());
        }
    }

    /// The registry credentials of a `kubernetes.io/dockerconfigjson` secret.
    pub fn docker_config(&self) -> Option<DockerConfig> {
        serde_json::from_slice(&self.value(DOCKER_CONFIG_JSON_KEY)?).ok()
    }

    /// A registry-credentials secret for one registry.
    pub fn docker_registry(name: &str, server: &str, username: &str, password: &str) -> Secret {
        let mut auths = BTreeMap::new();
        auths.insert(
            server.to_string(),
            DockerAuth {
                username: Some(username.to_string()),
                password: Some(password.to_string()),
                auth: Some(encode_value(format!("{username}:{password}").as_bytes())),
            },
        );
        let config = serde_json::to_vec(&DockerConfig { auths }).unwrap_or_default();
        let mut data = BTreeMap::new();
        data.insert(DOCKER_CONFIG_JSON_KEY.to_string(), encode_value(&config));
        Secret {
            metadata: ObjectMeta {
                name: name.to_string(),
                ..Default::default()
            },
            type_: Some(SECRET_TYPE_DOCKER_CONFIG_JSON.to_string()),
            data,
            ..Default::default()
        }
    }
}

impl DockerAuth {
    /// The user name and password, from the fields or from `auth`.
    pub fn credentials(&self) -> Option<(String, String)> {
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Some((u.clone(), p.clone()));
        }
        let decoded = b64().decode(self.auth.as_deref()?).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (u, p) = text.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

/// The registry host an `auths` key names: `https://host:port/v1/` → `host:port`.
pub fn registry_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => host,
    }
}

/// The registry host of an image reference (`docker.io` when it names none).
pub fn image_registry(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            registry_host(first)
        }
        _ => "docker.io".to_string(),
    }
}

fn is_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks a secret as it will be stored (after [`Secret::normalize`]).
pub fn validate_secret(s: &Secret, errors: &mut Errors) {
    for (k, v) in &s.data {
        if !is_config_key(k) {
            errors.add(
                format!("data[{k}]"),
                format!("Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'"),
            );
        } else if b64().decode(v).is_err() {
            errors.add(
                format!("data[{k}]"),
                "Invalid value: the value must be base64-encoded (use stringData for plain text)",
            );
        }
    }
    let total: usize = s.data.values().map(String::len).sum();
    if total > 1 << 20 {
        errors.add("data", "Too long: a secret's data may not exceed 1 MiB");
    }
    match s.type_.as_deref() {
        Some("") => errors.add("type", "Invalid value: \"\": must not be empty"),
        Some(SECRET_TYPE_DOCKER_CONFIG_JSON) => {
            if !s.data.contains_key(DOCKER_CONFIG_JSON_KEY) {
                errors.add(
                    format!("data[{DOCKER_CONFIG_JSON_KEY}]"),
                    "Required value: a kubernetes.io/dockerconfigjson secret holds its credentials there",
                );
            } else if s.value(DOCKER_CONFIG_JSON_KEY).is_some() && s.docker_config().is_none() {
                errors.add(
                    format!("data[{DOCKER_CONFIG_JSON_KEY}]"),
                    "Invalid value: must be a Docker config.json with an \"auths\" object",
                );
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_is_stored_encoded_and_read_back() {
        let mut s = Secret {
            string_data: [("password".to_string(), "s3cret".to_string())].into(),
            ..Default::default()
        };
        s.normalize();
        assert!(s.string_data.is_empty());
        assert_eq!(s.data["password"], "czNjcmV0");
        assert_eq!(s.value("password").unwrap(), b"s3cret");
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
    }

    #[test]
    fn registry_secrets_carry_credentials_per_host() {
        let s = Secret::docker_registry("reg", "https://127.0.0.1:5000/v1/", "kumo", "pw:x");
        let mut e = Errors::default();
        validate_secret(&s, &mut e);
        assert!(e.into_result().is_ok());
        let config = s.docker_config().unwrap();
        let (key, auth) = config.auths.iter().next().unwrap();
        assert_eq!(registry_host(key), "127.0.0.1:5000");
        assert_eq!(auth.credentials(), Some(("kumo".into(), "pw:x".into())));
        let only_auth = DockerAuth {
            auth: Some(encode_value(b"u:p")),
            ..Default::default()
        };
        assert_eq!(only_auth.credentials(), Some(("u".into(), "p".into())));
    }

    #[test]
    fn image_registries() {
        assert_eq!(image_registry("127.0.0.1:5000/web:1"), "127.0.0.1:5000");
        assert_eq!(image_registry("ghcr.io/a/b"), "ghcr.io");
        assert_eq!(image_registry("busybox"), "docker.io");
        assert_eq!(image_registry("library/busybox:1"), "docker.io");
        assert_eq!(image_registry("localhost/x"), "localhost");
    }

    #[test]
    fn bad_secrets_name_the_field() {
        let mut s = Secret {
            type_: Some(SECRET_TYPE_DOCKER_CONFIG_JSON.into()),
            data: [
                ("bad key!".to_string(), "eA==".to_string()),
                ("plain".to_string(), "not base64!".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let mut e = Errors::default();
        validate_secret(&s, &mut e);
        let msgs: Vec<String> = e
            .into_result()
            .unwrap_err()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert!(
            msgs.iter().any(|m| m.starts_with("data[bad key!]")),
            "{msgs:?}"
        );
        assert!(msgs
            .iter()
            .any(|m| m.starts_with("data[plain]") && m.contains("base64")));
        assert!(msgs
            .iter()
            .any(|m| m.starts_with("data[.dockerconfigjson]")));
        s.data.clear();
        s.data
            .insert(DOCKER_CONFIG_JSON_KEY.into(), encode_value(b"{\"x\":1"));
        let mut e = Errors::default();
        validate_secret(&s, &mut e);
        assert!(e.into_result().unwrap_err()[0]
            .to_string()
            .contains("Docker config.json"));
    }
}
