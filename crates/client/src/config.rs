//! Client configuration: server URL, bearer token and the cluster CA, from flags, `KUMO_CONFIG`
//! or `~/.kumo/config`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the API server is, how to authenticate to it, and how to know it is the right one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    pub server: String,
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

    /// Flags win over the config file; a missing file is fine when both flags are given (the
    /// CA still comes from the file when there is one).
    pub fn resolve(server: Option<String>, token: Option<String>) -> Result<Self, String> {
        let path = Self::default_path();
        if let (Some(server), Some(token)) = (&server, &token) {
            let ca = Self::load(&path)
                .ok()
                .and_then(|f| f.certificate_authority_data);
            return Ok(ClientConfig {
                server: server.clone(),
                token: token.clone(),
                certificate_authority_data: ca,
            });
        }
        let file = if path.exists() {
            Some(Self::load(&path)?)
        } else {
            None
        };
        let server = server
            .or_else(|| file.as_ref().map(|f| f.server.clone()))
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let token = token.or_else(|| file.as_ref().map(|f| f.token.clone())).ok_or_else(|| {
            format!("no token: set KUMO_TOKEN or pass --token-file, or start `kumo up`, which writes {} (or set KUMO_CONFIG)", path.display())
        })?;
        Ok(ClientConfig {
            server,
            token,
            certificate_authority_data: file.and_then(|f| f.certificate_authority_data),
        })
    }
}
