//! The bootstrap data several API servers on one etcd share, k3s style: the cluster CA, the
//! service-account signing key, the Secret encryption config and the API server's client
//! certificate towards agents, kept in etcd as one record sealed with AES-256-GCM under a key
//! derived (HKDF-SHA256, per-record salt) from the *server token*, 32 random bytes that the
//! first server writes to `DATA/server-token` (0600). The record's key is outside `/registry/`,
//! so no API path reaches it. A second server opens the record with the same token and writes
//! the shared files into its own data dir; its serving certificate is its own, for its own
//! names, signed by the shared CA, so one client config trusts every server.

use super::{pki, private, service_accounts};
use anyhow::{anyhow, Context};
use base64::Engine as _;
use clap::Args;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The record's etcd key: outside `/registry/`, where every API object lives.
pub const RECORD_KEY: &str = "/kumo/bootstrap";
/// What the server token has for secret: 32 random bytes, written as 64 hex digits.
const TOKEN_BYTES: usize = 32;
/// Binds the ciphertext to what it is: a record of this version under this key.
const AAD: &[u8] = b"kumo bootstrap v1 /kumo/bootstrap";
/// HKDF's info: the key is for this use only.
const KDF_INFO: &[u8] = b"kumo bootstrap record key";

/// The flag of a joining server.
#[derive(Args, Debug, Clone)]
pub struct BootstrapArgs {
    /// With --store etcd://: a file holding the server token of the cluster to join (the first
    /// server's DATA_DIR/server-token; default: $KUMO_SERVER_TOKEN, else this data dir's)
    #[arg(long)]
    pub server_token_file: Option<PathBuf>,
}

/// The shared files, as PEM and YAML texts.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    pub ca_crt: String,
    pub ca_key: String,
    pub sa_key: String,
    pub encryption_config: String,
    pub kubelet_client_crt: String,
    pub kubelet_client_key: String,
}

/// Shows the CA certificate only: the rest is key material.
impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("ca_crt", &self.ca_crt)
            .finish_non_exhaustive()
    }
}

/// The record as etcd holds it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sealed {
    version: u32,
    kdf: String,
    salt: String,
    nonce: String,
    ciphertext: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the server token is not 64 hex digits (the contents of the first server's DATA_DIR/server-token)")]
    TokenForm,
    #[error("the server token does not open this cluster's bootstrap data")]
    WrongToken,
    #[error("the bootstrap record in etcd ({RECORD_KEY}) is not usable: {0}")]
    Corrupt(String),
    #[error("no randomness for the bootstrap record")]
    Random,
}

/// A fresh server token: 64 hex digits.
pub fn new_token() -> Result<String, SealError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SealError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token's 32 bytes.
fn token_secret(token: &str) -> Result<[u8; TOKEN_BYTES], SealError> {
    let hex = token.trim();
    if hex.len() != 2 * TOKEN_BYTES || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SealError::TokenForm);
    }
    let mut out = [0u8; TOKEN_BYTES];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| SealError::TokenForm)?;
    }
    Ok(out)
}

/// The AES-256-GCM key for `token` and `salt`.
fn record_key(token: &str, salt: &[u8]) -> Result<LessSafeKey, SealError> {
    let secret = token_secret(token)?;
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt).extract(&secret);
    let okm = prk
        .expand(&[KDF_INFO], &AES_256_GCM)
        .map_err(|_| SealError::Random)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// `record` sealed with `token` (fresh salt and nonce), as the bytes etcd keeps.
pub fn seal(token: &str, record: &Record) -> Result<Vec<u8>, SealError> {
    let rng = SystemRandom::new();
    let (mut salt, mut nonce) = ([0u8; 32], [0u8; NONCE_LEN]);
    rng.fill(&mut salt).map_err(|_| SealError::Random)?;
    rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
    let key = record_key(token, &salt)?;
    let mut data = serde_json::to_vec(record).map_err(|e| SealError::Corrupt(e.to_string()))?;
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(AAD),
        &mut data,
    )
    .map_err(|_| SealError::Random)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let sealed = Sealed {
        version: 1,
        kdf: "hkdf-sha256".into(),
        salt: b64.encode(salt),
        nonce: b64.encode(nonce),
        ciphertext: b64.encode(data),
    };
    serde_json::to_vec(&sealed).map_err(|e| SealError::Corrupt(e.to_string()))
}

/// The record in `bytes`, opened with `token`.
pub fn open(token: &str, bytes: &[u8]) -> Result<Record, SealError> {
    let corrupt = |what: &str| SealError::Corrupt(what.to_string());
    let sealed: Sealed = serde_json::from_slice(bytes).map_err(|e| corrupt(&e.to_string()))?;
    if sealed.version != 1 || sealed.kdf != "hkdf-sha256" {
        return Err(corrupt(&format!(
            "version {} with kdf {:?} is not known to this kumo",
            sealed.version, sealed.kdf
        )));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = b64.decode(&sealed.salt).map_err(|_| corrupt("salt"))?;
    let nonce: [u8; NONCE_LEN] = b64
        .decode(&sealed.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| corrupt("nonce"))?;
    let mut data = b64
        .decode(&sealed.ciphertext)
        .map_err(|_| corrupt("ciphertext"))?;
    let key = record_key(token, &salt)?;
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(AAD),
            &mut data,
        )
        .map_err(|_| SealError::WrongToken)?;
    serde_json::from_slice(plain).map_err(|e| corrupt(&e.to_string()))
}

pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server-token")
}

/// The cluster's bootstrap data and the token that opens it.
pub struct Joined {
    pub record: Record,
    pub token: String,
    /// This server stored the record (the first server on this etcd).
    pub first: bool,
}

/// The server token given (`--server-token-file`, `$KUMO_SERVER_TOKEN`) or kept in `data_dir`.
fn given_token(args: &BootstrapArgs, data_dir: &Path) -> anyhow::Result<Option<String>> {
    let given = crate::token_source::secret(
        args.server_token_file.as_deref(),
        "--server-token-file",
        "KUMO_SERVER_TOKEN",
    )?;
    if given.is_some() {
        return Ok(given);
    }
    let kept = token_path(data_dir);
    if !kept.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&kept)
        .with_context(|| format!("cannot read {}", kept.display()))?;
    Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
}

/// Reads the cluster's bootstrap record from etcd and opens it with the server token; on the
/// first server (no record yet) makes one from this data dir's files (or fresh ones) and
/// stores it. Writes nothing into `data_dir`: a server that cannot join leaves it as it was.
pub async fn prepare(
    store: &dyn kumo_store::Store,
    args: &BootstrapArgs,
    data_dir: &Path,
    encryption_config: Option<&Path>,
) -> anyhow::Result<Joined> {
    let given = given_token(args, data_dir)?;
    let read = move || async move {
        store
            .get(RECORD_KEY)
            .await
            .map_err(|e| anyhow!("cannot read the bootstrap record: {e}"))
    };
    let mut existing = read().await?;
    if existing.is_none() {
        let token = match &given {
            Some(t) => {
                token_secret(t)?;
                t.clone()
            }
            None => new_token()?,
        };
        let record = local_record(data_dir, encryption_config)?;
        match store.create(RECORD_KEY, seal(&token, &record)?).await {
            Ok(_) => {
                return Ok(Joined {
                    record,
                    token,
                    first: true,
                })
            }
            // Another server stored its record first: join that one.
            Err(kumo_store::StoreError::AlreadyExists(_)) => existing = read().await?,
            Err(e) => return Err(anyhow!("cannot store the bootstrap record: {e}")),
        }
    }
    let kv = existing.ok_or_else(|| anyhow!("the bootstrap record vanished from etcd"))?;
    let token = given.ok_or_else(|| {
        anyhow!(
            "this etcd already holds a kumo cluster: join it with --server-token-file FILE or KUMO_SERVER_TOKEN (the first server's {})",
            token_path(Path::new("DATA_DIR")).display()
        )
    })?;
    let record = open(&token, &kv.value)?;
    Ok(Joined {
        record,
        token,
        first: false,
    })
}

/// The first server's record: the files this data dir has, the others made fresh.
fn local_record(data_dir: &Path, encryption_config: Option<&Path>) -> anyhow::Result<Record> {
    let dir = pki::pki_dir(data_dir);
    let have = |name: &str| read_if_there(&dir.join(name));
    let (ca, kept_ca) = match (have("ca.crt")?, have("ca.key")?) {
        (Some(crt), Some(key)) => (
            kumo_pki::Ca::from_pem(&crt, &key)
                .with_context(|| format!("the cluster CA in {} is not usable", dir.display()))?,
            true,
        ),
        (None, None) => (
            kumo_pki::Ca::generate().context("cannot make the cluster CA")?,
            false,
        ),
        _ => {
            return Err(anyhow!(
                "{} holds only one of ca.crt and ca.key: restore the other, or remove both to make a new CA",
                dir.display()
            ))
        }
    };
    let client = match (
        have("apiserver-kubelet-client.crt")?,
        have("apiserver-kubelet-client.key")?,
    ) {
        (Some(crt), Some(key)) if kept_ca => (crt, key),
        _ => {
            let issued = ca
                .issue_client(
                    pki::APISERVER_CLIENT_CN,
                    &[kumo_api::user::GROUP_MASTERS],
                    kumo_pki::LEAF_VALIDITY,
                )
                .context("cannot make the API server's client certificate")?;
            (issued.cert_pem, issued.key_pem)
        }
    };
    let sa_key = match read_if_there(&service_accounts::key_path(data_dir))? {
        Some(pem) => pem,
        None => kumo_apiserver::ServiceAccounts::generate_key()
            .map_err(|e| anyhow!("cannot make a service-account key: {e}"))?,
    };
    let encryption_config = match encryption_config {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the encryption config {}", path.display()))?,
        None => match read_if_there(&private::default_encryption_config(data_dir))? {
            Some(text) => text,
            None => {
                kumo_apiserver::encryption::generate().context("cannot make an encryption key")?
            }
        },
    };
    Ok(Record {
        ca_crt: ca.cert_pem().to_string(),
        ca_key: ca.key_pem(),
        sa_key,
        encryption_config,
        kubelet_client_crt: client.0,
        kubelet_client_key: client.1,
    })
}

fn read_if_there(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// One file of the record in the data dir, and whether a different one there stops the start.
struct Placed<'a> {
    path: PathBuf,
    text: &'a str,
    must_match: bool,
}

impl Joined {
    fn placed(&self, data_dir: &Path, encryption_given: bool) -> Vec<Placed<'_>> {
        let dir = pki::pki_dir(data_dir);
        let r = &self.record;
        let mut files = vec![
            Placed {
                path: dir.join("ca.crt"),
                text: &r.ca_crt,
                must_match: true,
            },
            Placed {
                path: dir.join("ca.key"),
                text: &r.ca_key,
                must_match: true,
            },
            Placed {
                path: service_accounts::key_path(data_dir),
                text: &r.sa_key,
                must_match: true,
            },
        ];
        // A server's own kubelet-client certificate (same CA) is as good as the shared one.
        let client = dir.join("apiserver-kubelet-client");
        if !client.with_extension("crt").exists() || !client.with_extension("key").exists() {
            files.push(Placed {
                path: client.with_extension("crt"),
                text: &r.kubelet_client_crt,
                must_match: false,
            });
            files.push(Placed {
                path: client.with_extension("key"),
                text: &r.kubelet_client_key,
                must_match: false,
            });
        }
        // With --encryption-provider-config the operator gives every server its config.
        if !encryption_given {
            files.push(Placed {
                path: private::default_encryption_config(data_dir),
                text: &r.encryption_config,
                must_match: true,
            });
        }
        files
    }

    /// Writes the shared files this data dir lacks (0600 in 0700 directories) and the server
    /// token; a CA, service-account key or encryption config there that differs from the
    /// cluster's stops the start before anything is written.
    pub fn install(&self, data_dir: &Path, encryption_given: bool) -> anyhow::Result<()> {
        let files = self.placed(data_dir, encryption_given);
        for f in files.iter().filter(|f| f.must_match) {
            if let Some(have) = read_if_there(&f.path)? {
                if have.trim() != f.text.trim() {
                    return Err(anyhow!(
                        "{} is not the one of the cluster this etcd holds: this data dir belongs to another cluster (use another --data-dir, or remove {} to join this one)",
                        f.path.display(),
                        f.path.display()
                    ));
                }
            }
        }
        private::dir(data_dir)?;
        private::dir(&pki::pki_dir(data_dir))?;
        for f in &files {
            match read_if_there(&f.path)? {
                Some(have) if have.trim() == f.text.trim() || !f.must_match => {
                    private::file(&f.path)?
                }
                _ => pki::write_private(&f.path, f.text)?,
            }
        }
        let token = token_path(data_dir);
        if read_if_there(&token)?.is_none_or(|t| t.trim() != self.token) {
            pki::write_private(&token, &format!("{}\n", self.token))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            ca_crt: "ca-crt".into(),
            ca_key: "ca-key".into(),
            sa_key: "sa".into(),
            encryption_config: "enc".into(),
            kubelet_client_crt: "kc".into(),
            kubelet_client_key: "kk".into(),
        }
    }

    /// Seals `record()` with `sealing`, opens it with `opening`.
    fn check(sealing: &str, opening: &str, expected: Result<Record, SealError>) {
        let sealed = seal(sealing, &record());
        let got = sealed.and_then(|bytes| open(opening, &bytes));
        assert_eq!(
            got, expected,
            "sealed with {sealing:?}, opened with {opening:?}"
        );
    }

    #[test]
    fn a_record_opens_only_with_its_token() {
        let token = new_token().unwrap();
        let other = new_token().unwrap();
        assert_ne!(token, other);
        check(&token, &token, Ok(record()));
        check(&token, &format!(" {token}\n"), Ok(record()));
        check(&token, &token.to_uppercase(), Ok(record()));
        check(&token, &other, Err(SealError::WrongToken));
        check(&token, "abc", Err(SealError::TokenForm));
        check(&token, &"g".repeat(64), Err(SealError::TokenForm));
        check("short", &token, Err(SealError::TokenForm));
    }

    #[test]
    fn the_record_is_sealed_with_fresh_salt_and_nonce_and_no_plain_text() {
        let token = new_token().unwrap();
        let (a, b) = (
            seal(&token, &record()).unwrap(),
            seal(&token, &record()).unwrap(),
        );
        assert_ne!(a, b);
        let text = String::from_utf8(a.clone()).unwrap();
        assert!(!text.contains("ca-key") && !text.contains(&token), "{text}");
        // A flipped byte of the ciphertext is refused as the wrong token would be.
        let mut sealed: Sealed = serde_json::from_slice(&a).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut data = b64.decode(&sealed.ciphertext).unwrap();
        data[0] ^= 1;
        sealed.ciphertext = b64.encode(data);
        let tampered = serde_json::to_vec(&sealed).unwrap();
        assert_eq!(open(&token, &tampered), Err(SealError::WrongToken));
        assert!(matches!(
            open(&token, b"not json"),
            Err(SealError::Corrupt(_))
        ));
    }

    fn joined(record: Record) -> Joined {
        Joined {
            record,
            token: "t".repeat(64),
            first: false,
        }
    }

    #[test]
    fn install_writes_what_is_missing_and_refuses_another_cluster() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let j = joined(record());
        j.install(&data, false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for (file, text) in [
            ("pki/ca.crt", "ca-crt"),
            ("pki/ca.key", "ca-key"),
            ("pki/sa.key", "sa"),
            ("pki/apiserver-kubelet-client.crt", "kc"),
            ("encryption-config.yaml", "enc"),
        ] {
            let path = data.join(file);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "{file}");
            assert_eq!(mode(&path), 0o600, "{file}");
        }
        assert_eq!(mode(&data.join("pki")), 0o700);
        assert_eq!(
            std::fs::read_to_string(token_path(&data)).unwrap().trim(),
            j.token
        );
        // Again: nothing changes.
        j.install(&data, false).unwrap();
        // Another cluster's CA in the data dir: refused, nothing written.
        let other = joined(Record {
            ca_crt: "other-ca".into(),
            sa_key: "other-sa".into(),
            ..record()
        });
        std::fs::remove_file(token_path(&data)).unwrap();
        let e = other.install(&data, false).unwrap_err().to_string();
        assert!(
            e.contains("ca.crt is not the one of the cluster this etcd holds"),
            "{e}"
        );
        assert!(!token_path(&data).exists());
        // An encryption config given by flag is the operator's: the record's is not written.
        let fresh = tmp.path().join("fresh");
        j.install(&fresh, true).unwrap();
        assert!(!private::default_encryption_config(&fresh).exists());
    }
}
