//! The encryption config file, in the shape of kube-apiserver's `EncryptionConfiguration`
//! (`--encryption-provider-config`): which resources are encrypted at rest, and with which keys.
//!
//! ```yaml
//! apiVersion: apiserver.config.k8s.io/v1
//! kind: EncryptionConfiguration
//! resources:
//! - resources: [secrets]
//!   providers:
//!   - aesgcm:
//!       keys:
//!       - {name: key1, secret: <base64 of 32 random bytes>}
//!   - identity: {}
//! ```
//!
//! Only the `aesgcm` (with 32-byte keys) and `identity` providers exist here; every error names
//! the field it is about.

use crate::keys;
use crate::request::Kind;
use crate::transformer::{AesKey, Provider, Rule, Transformer};
use base64::Engine as _;
use serde::Deserialize;

pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
pub const KIND: &str = "EncryptionConfiguration";

/// A config that cannot be used, with the field path it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

fn error(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    api_version: String,
    kind: String,
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceConfig {
    resources: Vec<String>,
    providers: Vec<ProviderConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderConfig {
    aesgcm: Option<AesGcmConfig>,
    identity: Option<Empty>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AesGcmConfig {
    keys: Vec<KeyConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    name: String,
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// The served kind a resource name (`secrets`, `mltasks.kumo.dev`) means.
fn resource_kind(name: &str) -> Option<Kind> {
    let (plural, group) = name.split_once('.').unwrap_or((name, ""));
    kumo_api::kinds()
        .iter()
        .find(|k| k.plural == plural && k.group == group)
        .map(Kind)
}

/// Parses and checks a config file's text into the transformer it describes.
pub fn parse(text: &str) -> Result<Transformer, ConfigError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
        // serde_path_to_error writes "." for the top level and "?" where the YAML broke
        // before any field was reached.
        let path = match e.path().to_string() {
            p if p == "." || p == "?" => "config".to_string(),
            p => p,
        };
        error(path, e.into_inner().to_string())
    })?;
    if file.api_version != API_VERSION {
        return Err(error(
            "apiVersion",
            format!("must be {API_VERSION}, not {:?}", file.api_version),
        ));
    }
    if file.kind != KIND {
        return Err(error(
            "kind",
            format!("must be {KIND}, not {:?}", file.kind),
        ));
    }
    if file.resources.is_empty() {
        return Err(error("resources", "must list at least one entry"));
    }
    let mut rules = Vec::new();
    for (i, r) in file.resources.into_iter().enumerate() {
        let at = format!("resources[{i}]");
        if r.resources.is_empty() {
            return Err(error(
                format!("{at}.resources"),
                "must name at least one resource",
            ));
        }
        if r.providers.is_empty() {
            return Err(error(
                format!("{at}.providers"),
                "must list at least one provider",
            ));
        }
        let providers = providers(&at, r.providers)?;
        for (j, name) in r.resources.iter().enumerate() {
            let kind = resource_kind(name).ok_or_else(|| {
                error(
                    format!("{at}.resources[{j}]"),
                    format!("{name:?} is not a resource kumo serves (e.g. secrets)"),
                )
            })?;
            let prefix = keys::prefix(&kind, None);
            // As in Kubernetes, the first entry naming a resource is the one that applies.
            if rules.iter().any(|r: &Rule| r.prefix == prefix) {
                return Err(error(
                    format!("{at}.resources[{j}]"),
                    format!("{name:?} is already named by an earlier entry"),
                ));
            }
            rules.push(Rule {
                prefix,
                providers: providers.clone(),
            });
        }
    }
    Ok(Transformer::new(rules))
}

fn providers(at: &str, list: Vec<ProviderConfig>) -> Result<Vec<Provider>, ConfigError> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (j, p) in list.into_iter().enumerate() {
        let at = format!("{at}.providers[{j}]");
        match (p.aesgcm, p.identity) {
            (Some(aes), None) => {
                if aes.keys.is_empty() {
                    return Err(error(
                        format!("{at}.aesgcm.keys"),
                        "must list at least one key",
                    ));
                }
                let mut keys = Vec::new();
                for (k, key) in aes.keys.into_iter().enumerate() {
                    let at = format!("{at}.aesgcm.keys[{k}]");
                    keys.push(aes_key(&at, key, &mut names)?);
                }
                out.push(Provider::AesGcm(keys));
            }
            (None, Some(Empty {})) => out.push(Provider::Identity),
            _ => {
                return Err(error(
                    at,
                    "must name exactly one provider: aesgcm or identity",
                ))
            }
        }
    }
    Ok(out)
}

fn aes_key(
    at: &str,
    key: KeyConfig,
    names: &mut std::collections::HashSet<String>,
) -> Result<AesKey, ConfigError> {
    // The name is part of every stored value, up to a ':'.
    if key.name.is_empty() || key.name.contains(':') || key.name.len() > 64 {
        return Err(error(
            format!("{at}.name"),
            format!("{:?} must be 1 to 64 characters without ':'", key.name),
        ));
    }
    if !names.insert(key.name.clone()) {
        return Err(error(
            format!("{at}.name"),
            format!(
                "{:?} is listed twice (a stored value names the key that encrypted it)",
                key.name
            ),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.secret.trim())
        .map_err(|e| error(format!("{at}.secret"), format!("not valid base64: {e}")))?;
    let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        error(
            format!("{at}.secret"),
            format!(
                "must be the base64 of 32 bytes (AES-256), not of {}",
                bytes.len()
            ),
        )
    })?;
    Ok(AesKey::new(key.name, &secret))
}

/// A new config for secrets: one fresh random key (`key1`), then identity so that secrets
/// stored in plain text before encryption was on stay readable.
pub fn generate() -> std::io::Result<String> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(std::io::Error::other)?;
    let secret = base64::engine::general_purpose::STANDARD.encode(secret);
    Ok(format!(
        "# Secrets at rest: the first key encrypts new writes, every key listed reads.\n\
         # To rotate: add a key second and restart, move it first and restart,\n\
         # run `kumo secrets reencrypt`, then remove the old key and restart.\n\
         apiVersion: {API_VERSION}\n\
         kind: {KIND}\n\
         resources:\n\
         - resources: [secrets]\n  \
           providers:\n  \
           - aesgcm:\n      \
               keys:\n      \
               - name: key1\n        \
                 secret: {secret}\n  \
           - identity: {{}}\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY32: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY16: &str = "AAECAwQFBgcICQoLDA0ODw==";

    fn config(providers: &str) -> String {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
        )
    }

    /// Parses `text`: `Ok(())` or the error's text, which must contain `expected`.
    fn check(text: &str, expected: Result<(), &str>) {
        match (parse(text), expected) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(want)) => {
                let e = e.to_string();
                assert!(e.contains(want), "{e:?} should contain {want:?}");
            }
            (got, want) => panic!("{text}\ngot {:?}, want {want:?}", got.map(|_| ())),
        }
    }

    #[test]
    fn configs() {
        let aes = |secret: &str| {
            format!("  - aesgcm:\n      keys:\n      - name: key1\n        secret: {secret}\n")
        };
        check(&config(&aes(KEY32)), Ok(()));
        check(
            &config(&format!("{}  - identity: {{}}\n", aes(KEY32))),
            Ok(()),
        );
        check(&config("  - identity: {}\n"), Ok(()));
        check(&generate().unwrap(), Ok(()));
        check(
            &config(&aes(KEY16)),
            Err("resources[0].providers[0].aesgcm.keys[0].secret: must be the base64 of 32 bytes (AES-256), not of 16"),
        );
        check(
            &config(&aes("not*base64")),
            Err("resources[0].providers[0].aesgcm.keys[0].secret: not valid base64"),
        );
        check(
            &config("  - aesgcm:\n      keys:\n      - name: key1\n"),
            Err("resources[0].providers[0].aesgcm.keys[0]: missing field `secret`"),
        );
        check(
            &config(&format!(
                "  - aesgcm:\n      keys:\n      - name: a:b\n        secret: {KEY32}\n"
            )),
            Err("resources[0].providers[0].aesgcm.keys[0].name: \"a:b\" must be 1 to 64"),
        );
        check(
            &config(&format!(
                "  - aesgcm:\n      keys:\n      - {{name: k, secret: {KEY32}}}\n      - {{name: k, secret: {KEY32}}}\n"
            )),
            Err("resources[0].providers[0].aesgcm.keys[1].name: \"k\" is listed twice"),
        );
        check(
            &config("  - aesgcm:\n      keys: []\n"),
            Err("resources[0].providers[0].aesgcm.keys: must list at least one key"),
        );
        check(
            &config("  - aescbc:\n      keys: []\n"),
            Err("resources[0].providers[0]: unknown field `aescbc`"),
        );
        check(
            &config("  - {}\n"),
            Err("resources[0].providers[0]: must name exactly one provider"),
        );
        check(
            &config("").replace("providers:\n", "providers: []\n"),
            Err("resources[0].providers: must list at least one provider"),
        );
        check(
            "apiVersion: v1\nkind: EncryptionConfiguration\nresources: []\n",
            Err("apiVersion: must be apiserver.config.k8s.io/v1"),
        );
        check(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: Secret\nresources: []\n",
            Err("kind: must be EncryptionConfiguration"),
        );
        check(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n",
            Err("missing field `resources`"),
        );
        check(
            &config("  - identity: {}\n").replace("[secrets]", "[widgets]"),
            Err("resources[0].resources[0]: \"widgets\" is not a resource kumo serves"),
        );
        check("{", Err("config: "));
    }

    #[test]
    fn rules_cover_the_named_resources() {
        let t = parse(&config(&format!(
            "  - aesgcm:\n      keys:\n      - {{name: k, secret: {KEY32}}}\n"
        )))
        .unwrap();
        assert!(t.encrypts("/registry/core/secrets/default/s"));
        assert!(!t.encrypts("/registry/core/pods/default/s"));
        let t = parse(
            &config("  - identity: {}\n").replace("[secrets]", "[secrets, mltasks.kumo.dev]"),
        )
        .unwrap();
        assert!(!t.encrypts("/registry/core/secrets/default/s"));
    }
}
