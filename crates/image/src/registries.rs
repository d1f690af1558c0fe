//! Which registries may be reached over plain HTTP, and the credentials for each.

use crate::error::{invalid, io_err, ImageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How to authenticate a pull. Basic credentials work for registries that take HTTP basic auth
/// and for those that hand out bearer tokens (the token request carries them).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum RegistryAuth {
    /// No credentials (the store then uses stored credentials for the registry, if any).
    #[default]
    Anonymous,
    /// A user name and a password or access token.
    Basic { username: String, password: String },
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryAuth::Anonymous => f.write_str("Anonymous"),
            RegistryAuth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
        }
    }
}

impl RegistryAuth {
    pub(crate) fn to_oci(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            RegistryAuth::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            RegistryAuth::Basic { username, password } => {
                oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}

/// The registry settings of a node: plain-HTTP exceptions and stored credentials.
#[derive(Clone, Debug, Default)]
pub struct Registries {
    insecure: Vec<String>,
    credentials: Credentials,
}

impl Registries {
    /// Loopback registries only may use plain HTTP; no credentials.
    pub fn new() -> Registries {
        Registries::default()
    }

    /// Loads the credentials in `~/.kumo/registries.json` (none when the file is absent).
    pub fn load_default() -> Result<Registries, ImageError> {
        Ok(Registries::new().with_credentials(Credentials::load(&Credentials::default_path())?))
    }

    /// Also allows plain HTTP to these registries (`host` or `host:port`, as in a reference):
    /// the agent's `--insecure-registry`.
    pub fn with_insecure(mut self, registries: impl IntoIterator<Item = String>) -> Registries {
        self.insecure
            .extend(registries.into_iter().map(|r| normalize_server(&r)));
        self
    }

    /// Uses these credentials for pulls that pass [`RegistryAuth::Anonymous`].
    pub fn with_credentials(mut self, credentials: Credentials) -> Registries {
        self.credentials = credentials;
        self
    }

    /// True when `registry` (as in a reference: `host[:port]`) may be reached over plain HTTP:
    /// loopback always, as Docker does; others only when named as insecure.
    pub fn allows_plain_http(&self, registry: &str) -> bool {
        is_loopback(registry) || self.insecure.iter().any(|r| r == registry)
    }

    /// `auth` itself, or the stored credentials for `registry` when `auth` is anonymous.
    pub fn auth_for(&self, registry: &str, auth: &RegistryAuth) -> RegistryAuth {
        match auth {
            RegistryAuth::Anonymous => self.credentials.get(registry).unwrap_or_default(),
            given => given.clone(),
        }
    }
}

/// True for `localhost`, `127.0.0.0/8` and `::1`, with or without a port.
fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    if host == "localhost" {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// The server key used for credentials: Docker Hub's aliases all mean `docker.io`; a scheme
/// and trailing path are dropped.
fn normalize_server(server: &str) -> String {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        other => other.to_string(),
    }
}

/// Stored registry credentials: `~/.kumo/registries.json`, mode 0600, written by
/// `kumo registry login`:
///
/// ```json
/// { "auths": { "registry.example.com": { "username": "me", "password": "secret" } } }
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    #[serde(default)]
    auths: BTreeMap<String, Login>,
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Login {
    username: String,
    password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Login({}, ***)", self.username)
    }
}

impl Credentials {
    /// `$HOME/.kumo/registries.json`.
    pub fn default_path() -> PathBuf {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(".kumo")
            .join("registries.json")
    }

    /// Reads a credentials file; a missing file means no credentials.
    pub fn load(path: &Path) -> Result<Credentials, ImageError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| invalid(format!("credentials file {}", path.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
            Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
        }
    }

    /// Writes the file atomically with mode 0600 (its directory is created if needed).
    pub fn save(&self, path: &Path) -> Result<(), ImageError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        // tempfile creates its files with mode 0600.
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(format!(
            "creating a temporary file in {}",
            dir.display()
        )))?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| invalid("credentials", e))?;
        tmp.write_all(&json)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(io_err(format!("writing {}", path.display())))?;
        tmp.persist(path)
            .map_err(|e| io_err(format!("writing {}", path.display()))(e.error))?;
        Ok(())
    }

    /// Sets the login for a server (`docker.io`, `host:port`, or an `https://` URL).
    pub fn insert(&mut self, server: &str, username: &str, password: &str) {
        self.auths.insert(
            normalize_server(server),
            Login {
                username: username.to_string(),
                password: password.to_string(),
            },
        );
    }

    /// Forgets a server's login; true when there was one.
    pub fn remove(&mut self, server: &str) -> bool {
        self.auths.remove(&normalize_server(server)).is_some()
    }

    /// The login for a registry, if stored.
    pub fn get(&self, registry: &str) -> Option<RegistryAuth> {
        self.auths
            .get(&normalize_server(registry))
            .map(|l| RegistryAuth::Basic {
                username: l.username.clone(),
                password: l.password.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn plain_http_only_for_loopback_and_named_registries() {
        let r = Registries::new().with_insecure(["10.0.0.5:5000".to_string()]);
        for (registry, plain) in [
            ("127.0.0.1:5000", true),
            ("127.1.2.3", true),
            ("localhost:5000", true),
            ("localhost", true),
            ("[::1]:5000", true),
            ("10.0.0.5:5000", true),
            ("10.0.0.5:5001", false),
            ("10.0.0.5", false),
            ("docker.io", false),
            ("localhost.evil.com", false),
            ("127.0.0.1.nip.io", false),
        ] {
            assert_eq!(r.allows_plain_http(registry), plain, "{registry}");
        }
    }

    #[test]
    fn credentials_round_trip_with_mode_0600() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("sub").join("registries.json");
        let mut c = Credentials::default();
        c.insert("https://index.docker.io/v1/", "me", "pw");
        c.insert("127.0.0.1:5000", "you", "pw2");
        c.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Credentials::load(&path).unwrap();
        assert_eq!(back, c);
        let registries = Registries::new().with_credentials(back);
        assert_eq!(
            registries.auth_for("docker.io", &RegistryAuth::Anonymous),
            RegistryAuth::Basic {
                username: "me".into(),
                password: "pw".into()
            }
        );
        let explicit = RegistryAuth::Basic {
            username: "x".into(),
            password: "y".into(),
        };
        assert_eq!(registries.auth_for("docker.io", &explicit), explicit);
        assert_eq!(
            registries.auth_for("quay.io", &RegistryAuth::Anonymous),
            RegistryAuth::Anonymous
        );
        assert!(!format!("{:?}", registries).contains("pw"));
        assert_eq!(
            Credentials::load(&t.path().join("none.json")).unwrap(),
            Credentials::default()
        );
    }
}
