//! Client configuration: server URL and bearer token, from flags, `KUMO_CONFIG` or `~/.kumo/config`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the API server is and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    pub server: String,
    pub token: String,
}

/// The default server address of `kumo up`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7400";

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

    /// Flags win over the config file; a missing file is fine when both flags are given.
    pub fn resolve(server: Option<String>, token: Option<String>) -> Result<Self, String> {
        if let (Some(server), Some(token)) = (&server, &token) {
            return Ok(ClientConfig {
                server: server.clone(),
                token: token.clone(),
            });
        }
        let path = Self::default_path();
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
        Ok(ClientConfig { server, token })
    }
}
