//! Stored-value transformers: AES-256-GCM encryption at rest for the keys under chosen prefixes
//! (Kubernetes' `aesgcm` and `identity` providers, with their stored format).
//!
//! An encrypted value is `k8s:enc:aesgcm:v1:<key name>:` + a 12-byte random nonce + the
//! ciphertext with its 16-byte tag; the store key is the additional authenticated data, so a
//! value copied under another key does not decrypt. The first provider of a rule writes; every
//! listed provider reads, which is what makes key rotation possible.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::borrow::Cow;

/// The prefix of every value an encrypting provider wrote (Kubernetes' envelope marker).
const ENCRYPTED: &[u8] = b"k8s:enc:";
const AESGCM: &[u8] = b"k8s:enc:aesgcm:v1:";
const NONCE_LEN: usize = 12;

/// Why a value could not be written or read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("the value is encrypted with key {0:?}, which the encryption config does not list")]
    UnknownKey(String),
    #[error("the value does not decrypt with key {0:?} (altered, or encrypted with another key of that name)")]
    Decrypt(String),
    #[error("the value is encrypted by a provider kumo does not know ({0:?})")]
    UnknownProvider(String),
    #[error(
        "the value is stored in plain text and the encryption config lists no identity provider"
    )]
    NotEncrypted,
    #[error("the encrypted value is malformed")]
    Malformed,
    #[error("encrypting with key {0:?} failed")]
    Encrypt(String),
    #[error("the operating system gave no random bytes for a nonce: {0}")]
    Random(String),
}

/// One AES-256-GCM key.
#[derive(Clone)]
pub struct AesKey {
    pub name: String,
    cipher: Aes256Gcm,
}

impl AesKey {
    pub fn new(name: impl Into<String>, secret: &[u8; 32]) -> Self {
        AesKey {
            name: name.into(),
            cipher: Aes256Gcm::new(secret.into()),
        }
    }
}

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material, not even in a debug log.
        f.debug_struct("AesKey").field("name", &self.name).finish()
    }
}

/// A provider of a rule, in the order the config lists them.
#[derive(Debug, Clone)]
pub enum Provider {
    AesGcm(Vec<AesKey>),
    Identity,
}

/// The providers for every key under `prefix`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub prefix: String,
    pub providers: Vec<Provider>,
}

/// All rules; a key no rule covers is stored as given.
#[derive(Debug, Clone, Default)]
pub struct Transformer {
    rules: Vec<Rule>,
}

/// A value read back: its plain bytes, and whether it should be written again because the first
/// provider did not write it (then an update writes it even when nothing else changed).
#[derive(Debug)]
pub struct Read<'a> {
    pub plain: Cow<'a, [u8]>,
    pub stale: bool,
}

impl Transformer {
    /// Stores every value as given.
    pub fn identity() -> Self {
        Transformer::default()
    }

    pub fn new(rules: Vec<Rule>) -> Self {
        Transformer { rules }
    }

    fn rule(&self, key: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| key.starts_with(&r.prefix))
    }

    /// Whether values under `key` are written encrypted.
    pub fn encrypts(&self, key: &str) -> bool {
        self.rule(key)
            .and_then(|r| r.providers.first())
            .is_some_and(|p| matches!(p, Provider::AesGcm(_)))
    }

    /// The bytes to store for `plain` under `key`.
    pub fn to_storage(&self, key: &str, plain: Vec<u8>) -> Result<Vec<u8>, TransformError> {
        let first = self.rule(key).and_then(|r| r.providers.first());
        let Some(Provider::AesGcm(keys)) = first else {
            return Ok(plain);
        };
        // A config with an aesgcm provider always has a key (checked when it is parsed).
        let Some(k) = keys.first() else {
            return Ok(plain);
        };
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|e| TransformError::Random(e.to_string()))?;
        let sealed = k
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| TransformError::Encrypt(k.name.clone()))?;
        let mut out =
            Vec::with_capacity(AESGCM.len() + k.name.len() + 1 + NONCE_LEN + sealed.len());
        out.extend_from_slice(AESGCM);
        out.extend_from_slice(k.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plain bytes of `stored`, read under `key`.
    pub fn from_storage<'a>(
        &self,
        key: &str,
        stored: &'a [u8],
    ) -> Result<Read<'a>, TransformError> {
        let Some(rule) = self.rule(key) else {
            return Ok(Read {
                plain: Cow::Borrowed(stored),
                stale: false,
            });
        };
        let Some(rest) = stored.strip_prefix(AESGCM) else {
            if stored.starts_with(ENCRYPTED) {
                let name = stored
                    .splitn(4, |b| *b == b':')
                    .nth(2)
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_default();
                return Err(TransformError::UnknownProvider(name));
            }
            let position = rule
                .providers
                .iter()
                .position(|p| matches!(p, Provider::Identity))
                .ok_or(TransformError::NotEncrypted)?;
            return Ok(Read {
                plain: Cow::Borrowed(stored),
                stale: position != 0,
            });
        };
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or(TransformError::Malformed)?;
        let name = std::str::from_utf8(&rest[..colon]).map_err(|_| TransformError::Malformed)?;
        let body = &rest[colon + 1..];
        if body.len() < NONCE_LEN {
            return Err(TransformError::Malformed);
        }
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        let mut found = None;
        for (i, p) in rule.providers.iter().enumerate() {
            if let Provider::AesGcm(keys) = p {
                if let Some(j) = keys.iter().position(|k| k.name == name) {
                    found = Some((i == 0 && j == 0, &keys[j]));
                    break;
                }
            }
        }
        let (current, k) = found.ok_or_else(|| TransformError::UnknownKey(name.to_string()))?;
        let plain = k
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| TransformError::Decrypt(name.to_string()))?;
        Ok(Read {
            plain: Cow::Owned(plain),
            stale: !current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "/registry/core/secrets/default/s";
    const PLAIN: &[u8] = br#"{"kind":"Secret","data":{"a":"c2VjcmV0"}}"#;

    fn key(name: &str, byte: u8) -> AesKey {
        AesKey::new(name, &[byte; 32])
    }

    fn with(providers: Vec<Provider>) -> Transformer {
        Transformer::new(vec![Rule {
            prefix: "/registry/core/secrets/".into(),
            providers,
        }])
    }

    fn aes(keys: &[(&str, u8)]) -> Provider {
        Provider::AesGcm(keys.iter().map(|(n, b)| key(n, *b)).collect())
    }

    /// Reads `stored` with `t`: the plain bytes and staleness, or the error.
    fn check(t: &Transformer, stored: &[u8], expected: Result<(&[u8], bool), TransformError>) {
        let got = t
            .from_storage(KEY, stored)
            .map(|r| (r.plain.into_owned(), r.stale));
        assert_eq!(got, expected.map(|(p, s)| (p.to_vec(), s)));
    }

    #[test]
    fn round_trip_hides_the_value() {
        let t = with(vec![aes(&[("key1", 1)])]);
        let stored = t.to_storage(KEY, PLAIN.to_vec()).unwrap();
        assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert!(!stored.windows(8).any(|w| w == b"c2VjcmV0"));
        assert_eq!(
            stored.len(),
            "k8s:enc:aesgcm:v1:key1:".len() + 12 + PLAIN.len() + 16
        );
        check(&t, &stored, Ok((PLAIN, false)));
        // A fresh nonce each time: the same value never stores the same bytes twice.
        assert_ne!(stored, t.to_storage(KEY, PLAIN.to_vec()).unwrap());
        // Other keys are not covered by the rule.
        assert_eq!(
            t.to_storage("/registry/core/pods/default/p", PLAIN.to_vec())
                .unwrap(),
            PLAIN
        );
    }

    #[test]
    fn reading_fails_cleanly() {
        let old = with(vec![aes(&[("key1", 1)])]);
        let stored = old.to_storage(KEY, PLAIN.to_vec()).unwrap();
        // Unknown key name.
        check(
            &with(vec![aes(&[("key2", 2)])]),
            &stored,
            Err(TransformError::UnknownKey("key1".into())),
        );
        // Same name, other key material.
        check(
            &with(vec![aes(&[("key1", 9)])]),
            &stored,
            Err(TransformError::Decrypt("key1".into())),
        );
        // One flipped bit of the ciphertext.
        let mut tampered = stored.clone();
        *tampered.last_mut().unwrap() ^= 1;
        check(&old, &tampered, Err(TransformError::Decrypt("key1".into())));
        // The value moved under another store key does not authenticate.
        assert_eq!(
            old.from_storage("/registry/core/secrets/default/other", &stored)
                .unwrap_err(),
            TransformError::Decrypt("key1".into())
        );
        // Truncated, and an unknown provider.
        check(
            &old,
            b"k8s:enc:aesgcm:v1:key1:short",
            Err(TransformError::Malformed),
        );
        check(
            &old,
            b"k8s:enc:aesgcm:v1:nocolon",
            Err(TransformError::Malformed),
        );
        check(
            &old,
            b"k8s:enc:kms:v2:x:abc",
            Err(TransformError::UnknownProvider("kms".into())),
        );
        // Plain text without an identity provider.
        check(&old, PLAIN, Err(TransformError::NotEncrypted));
    }

    #[test]
    fn rotation_reads_old_keys_and_writes_the_first() {
        let before = with(vec![aes(&[("key1", 1)]), Provider::Identity]);
        let old = before.to_storage(KEY, PLAIN.to_vec()).unwrap();
        // Step 1: key2 added second; every server can read it before any writes with it.
        let added = with(vec![aes(&[("key1", 1), ("key2", 2)]), Provider::Identity]);
        check(&added, &old, Ok((PLAIN, false)));
        // Step 2: key2 first: old values read and are stale; new writes use key2.
        let rotated = with(vec![aes(&[("key2", 2), ("key1", 1)]), Provider::Identity]);
        check(&rotated, &old, Ok((PLAIN, true)));
        let new = rotated.to_storage(KEY, PLAIN.to_vec()).unwrap();
        assert!(new.starts_with(b"k8s:enc:aesgcm:v1:key2:"));
        check(&rotated, &new, Ok((PLAIN, false)));
        // Step 3: key1 removed; the rewritten value still reads, the old one does not.
        let done = with(vec![aes(&[("key2", 2)])]);
        check(&done, &new, Ok((PLAIN, false)));
        check(&done, &old, Err(TransformError::UnknownKey("key1".into())));
        // A key in a later aesgcm provider reads too, and is stale.
        let split = with(vec![aes(&[("key2", 2)]), aes(&[("key1", 1)])]);
        check(&split, &old, Ok((PLAIN, true)));
    }

    #[test]
    fn identity_reads_plain_json() {
        // Data written before encryption: readable, and stale while aesgcm writes.
        let t = with(vec![aes(&[("key1", 1)]), Provider::Identity]);
        check(&t, PLAIN, Ok((PLAIN, true)));
        // Identity first: plain is current, and encrypted values still read (stale).
        let off = with(vec![Provider::Identity, aes(&[("key1", 1)])]);
        check(&off, PLAIN, Ok((PLAIN, false)));
        assert_eq!(off.to_storage(KEY, PLAIN.to_vec()).unwrap(), PLAIN);
        let enc = t.to_storage(KEY, PLAIN.to_vec()).unwrap();
        check(&off, &enc, Ok((PLAIN, true)));
        // No rule: stored as given, never stale.
        check(&Transformer::identity(), PLAIN, Ok((PLAIN, false)));
    }
}
