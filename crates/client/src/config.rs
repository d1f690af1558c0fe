//! Client configuration: server URLs, bearer token and the cluster CA, from flags, `KUMO_CONFIG`
//! or `~/.kumo/config`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the API server is, how to authenticate to it, and how to know it is the right one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    pub server: String,
    /// More API servers of the same control plane, tried in order after `server` when it does
    /// not answer (configs written before this field load as one server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    pub token: String,
    /// The cluster CA's certificate, PEM then base64 (kubeconfig's
    /// `certificate-authority-data`): an `https://` server must present a certificate it signed.
    #[serde(
        rename = "certificate-authority-data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_authority_data: Option<String>,
}

/// The default server address of `kumo up`.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:7400";

impl ClientConfig {
    /// The config file in use: `$KUMO_CONFIG`, else `~/.kumo/config`.
    pub fn default_path() -> PathBuf {
        match std::env::var_os("KUMO_CONFIG") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/root"));
                home.join(".kumo").join("config")
            }
        }
    }

    /// Reads a config file (JSON, which is also valid YAML).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read client config {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("client config {} is not valid: {e}", path.display()))
    }

    /// Writes the config with mode 0600, creating its directory.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(
            serde_json::to_string_pretty(self)
                .map_err(std::io::Error::other)?
                .as_bytes(),
        )?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// The config with the CA `ca_pem` (PEM text) as its `certificate-authority-data`.
    pub fn with_ca_pem(mut self, ca_pem: &str) -> Self {
        use base64::Engine;
        self.certificate_authority_data =
            Some(base64::engine::general_purpose::STANDARD.encode(ca_pem));
        self
    }

    /// The CA's PEM text, decoded from `certificate-authority-data`.
    pub fn ca_pem(&self) -> Result<Option<String>, String> {
        use base64::Engine;
        let Some(data) = &self.certificate_authority_data else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("certificate-authority-data is not base64: {e}"))?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| "certificate-authority-data is not PEM text".to_string())
    }

    /// Every server to try, `server` first, each once, without trailing slashes.
    pub fn endpoints(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::with_capacity(1 + self.servers.len());
        for s in std::iter::once(&self.server).chain(&self.servers) {
            let s = s.trim().trim_end_matches('/');
            if !s.is_empty() && !all.iter().any(|a| a == s) {
                all.push(s.to_string());
            }
        }
        all
    }

    /// The config of `server` (one URL, or several comma-separated: `--server A,B`) with
    /// `token` and the CA `ca_pem`.
    pub fn of(server: &str, token: &str, ca_pem: Option<&str>) -> Result<Self, String> {
        let (server, servers) = split_servers("--server", server)?;
        let config = ClientConfig {
            server,
            servers,
            token: token.to_string(),
            certificate_authority_data: None,
        };
        Ok(match ca_pem {
            Some(ca) => config.with_ca_pem(ca),
            None => config,
        })
    }

    /// Flags win over the config file; a missing file is fine when both flags are given (the
    /// CA still comes from the file when there is one). `server` may list several URLs,
    /// comma-separated; given, it replaces the file's whole list.
    pub fn resolve(server: Option<String>, token: Option<String>) -> Result<Self, String> {
        let path = Self::default_path();
        let server = server.map(|s| split_servers("--server", &s)).transpose()?;
        if let (Some((server, servers)), Some(token)) = (&server, &token) {
            let ca = Self::load(&path)
                .ok()
                .and_then(|f| f.certificate_authority_data);
            return Ok(ClientConfig {
                server: server.clone(),
                servers: servers.clone(),
                token: token.clone(),
                certificate_authority_data: ca,
            });
        }
        let file = if path.exists() {
            Some(Self::load(&path)?)
        } else {
            None
        };
        let (server, servers) = server
            .or_else(|| file.as_ref().map(|f| (f.server.clone(), f.servers.clone())))
            .unwrap_or_else(|| (DEFAULT_SERVER.to_string(), Vec::new()));
        let token = token.or_else(|| file.as_ref().map(|f| f.token.clone())).ok_or_else(|| {
            format!("no token: set KUMO_TOKEN or pass --token-file, or start `kumo up`, which writes {} (or set KUMO_CONFIG)", path.display())
        })?;
        Ok(ClientConfig {
            server,
            servers,
            token,
            certificate_authority_data: file.and_then(|f| f.certificate_authority_data),
        })
    }
}

/// Splits a comma-separated list of server URLs (`--server A,B`) into the first and the rest;
/// an empty entry or one that is not an http(s) URL is an error naming `field`.
pub fn split_servers(field: &str, value: &str) -> Result<(String, Vec<String>), String> {
    let mut urls = Vec::new();
    for (i, entry) in value.split(',').enumerate() {
        let given = entry.trim();
        let url = given.trim_end_matches('/');
        if given.is_empty() {
            return Err(format!("{field}: entry {} of {value:?} is empty", i + 1));
        }
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if rest.is_none_or(|r| r.is_empty()) {
            return Err(format!(
                "{field}: {given:?} must be an https:// URL (several are separated by commas)"
            ));
        }
        urls.push(url.to_string());
    }
    let first = urls.remove(0);
    Ok((first, urls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: &str, expected: Result<(&str, &[&str]), &str>) {
        let got = split_servers("--server", value);
        let expected = expected
            .map(|(s, rest)| (s.to_string(), rest.iter().map(|r| r.to_string()).collect()))
            .map_err(str::to_string);
        assert_eq!(got, expected, "{value:?}");
    }

    #[test]
    fn server_lists_split_on_commas() {
        check("https://a:7400", Ok(("https://a:7400", &[])));
        check(
            "https://a:7400/, https://b:7400",
            Ok(("https://a:7400", &["https://b:7400"])),
        );
        check(
            "https://a,",
            Err("--server: entry 2 of \"https://a,\" is empty"),
        );
        check(
            "a:7400",
            Err("--server: \"a:7400\" must be an https:// URL (several are separated by commas)"),
        );
        check(
            "https://",
            Err("--server: \"https://\" must be an https:// URL (several are separated by commas)"),
        );
    }

    fn load(text: &str) -> Result<Vec<String>, String> {
        serde_json::from_str::<ClientConfig>(text)
            .map(|c| c.endpoints())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn configs_with_one_server_or_a_list_load() {
        // A config written before `servers` existed.
        assert_eq!(
            load(r#"{"server": "https://a:7400/", "token": "t"}"#),
            Ok(vec!["https://a:7400".to_string()])
        );
        assert_eq!(
            load(
                r#"{"server": "https://a:7400", "servers": ["https://b:7400", "https://a:7400"], "token": "t"}"#
            ),
            Ok(vec![
                "https://a:7400".to_string(),
                "https://b:7400".to_string()
            ])
        );
        assert!(
            load(r#"{"server": "https://a", "servers": "https://b", "token": "t"}"#)
                .unwrap_err()
                .contains("invalid type")
        );
        // One server is saved as before, without an empty list.
        let one = ClientConfig::of("https://a:7400", "t", None).unwrap();
        assert!(!serde_json::to_string(&one).unwrap().contains("servers"));
    }
}
