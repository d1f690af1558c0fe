//! Service-account tokens as JSON Web Tokens (RFC 7519) signed with ES256 (ECDSA P-256,
//! SHA-256), with Kubernetes' claims. ring does the cryptography: it is already built for
//! rustls, so the tokens cost no new dependency, and the key is asymmetric, so the public half
//! can later be published (OIDC discovery) without giving out the power to sign.
//! Pure: the time is always a parameter.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};

/// The JOSE algorithm of every token.
pub const ALGORITHM: &str = "ES256";
/// How far a token's `nbf` may be ahead of this server's clock (another server's clock).
const LEEWAY_SECONDS: i64 = 60;
const PEM_LABEL: &str = "PRIVATE KEY";

/// Why a signing key cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a PEM \"{PEM_LABEL}\" block")]
    NotPem,
    #[error("the PEM block is not valid base64")]
    Base64,
    #[error("not a PKCS#8 ECDSA P-256 key: {0}")]
    Rejected(String),
    #[error("the system random number generator failed")]
    Random,
}

/// Why a token is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT of this issuer's key: another authenticator may know it.
    #[error("not a service account token")]
    NotOurs,
    #[error("service account token: invalid signature")]
    BadSignature,
    #[error("service account token: malformed: {0}")]
    Malformed(String),
    #[error("service account token has expired")]
    Expired,
    #[error("service account token is not valid yet")]
    NotYetValid,
    #[error("service account token: wrong issuer {0:?}")]
    WrongIssuer(String),
    #[error("service account token: not meant for this server (audiences {0:?})")]
    WrongAudience(Vec<String>),
}

/// A token's claims, in Kubernetes' shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// `system:serviceaccount:NS:NAME`.
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectClaim,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectClaim>,
}

/// An object a token names: its name and uid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectClaim {
    pub name: String,
    pub uid: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// The signing key, and the public key that verifies what it signed.
pub struct TokenKey {
    pair: EcdsaKeyPair,
    /// The key's id (`kid`): base64url of the SHA-256 of its public point.
    kid: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKey({})", self.kid)
    }
}

/// A new key, as PEM PKCS#8 (what `<data-dir>/pki/sa.key` holds).
pub fn generate_pem() -> Result<String, KeyError> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| KeyError::Random)?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
    let mut pem = format!("-----BEGIN {PEM_LABEL}-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    Ok(pem)
}

fn pem_der(pem: &str) -> Result<Vec<u8>, KeyError> {
    let begin = format!("-----BEGIN {PEM_LABEL}-----");
    let end = format!("-----END {PEM_LABEL}-----");
    let start = pem.find(&begin).ok_or(KeyError::NotPem)? + begin.len();
    let stop = pem[start..].find(&end).ok_or(KeyError::NotPem)? + start;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| KeyError::Base64)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenKey {
    /// The key of a PEM PKCS#8 ECDSA P-256 private key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem_der(pem)?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, pair.public_key().as_ref());
        Ok(TokenKey {
            kid: b64(digest.as_ref()),
            pair,
            rng,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signed token of `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let header = Header {
            alg: ALGORITHM.to_string(),
            kid: self.kid.clone(),
            typ: Some("JWT".to_string()),
        };
        // Both serialise: plain structs of strings and numbers.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let input = format!("{}.{}", b64(&header), b64(&payload));
        let sig = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| KeyError::Random)?;
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }

    /// The claims of a token this key signed, checked against the issuer, the audiences this
    /// server accepts and the time `now` (seconds since the epoch).
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotOurs);
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::NotOurs)?;
        // Another key's token (another issuer's, or one of ours from before a key change):
        // refused without a claim about it.
        if header.alg != ALGORITHM || header.kid != self.kid {
            return Err(TokenError::NotOurs);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::BadSignature)?;
        let input_len = h.len() + 1 + p.len();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.pair.public_key().as_ref())
            .verify(&token.as_bytes()[..input_len], &sig)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|e| TokenError::Malformed(format!("payload: {e}")))?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
        if claims.iss != issuer {
            return Err(TokenError::WrongIssuer(claims.iss));
        }
        if !claims.aud.iter().any(|a| audiences.contains(a)) {
            return Err(TokenError::WrongAudience(claims.aud));
        }
        if now >= claims.exp {
            return Err(TokenError::Expired);
        }
        if now + LEEWAY_SECONDS < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://kumo.test";

    fn claims(iat: i64, exp: i64) -> Claims {
        Claims {
            iss: ISS.into(),
            sub: "system:serviceaccount:a:default".into(),
            aud: vec![ISS.into()],
            exp,
            iat,
            nbf: iat,
            jti: "j".into(),
            kubernetes: KubernetesClaims {
                namespace: "a".into(),
                serviceaccount: ObjectClaim {
                    name: "default".into(),
                    uid: "sa-uid".into(),
                },
                pod: Some(ObjectClaim {
                    name: "web".into(),
                    uid: "pod-uid".into(),
                }),
            },
        }
    }

    fn key() -> TokenKey {
        TokenKey::from_pem(&generate_pem().unwrap()).unwrap()
    }

    /// Verifies `token` at time `now` against `key`.
    fn check(key: &TokenKey, token: &str, now: i64, expected: Result<(), TokenError>) {
        let got = key.verify(token, ISS, &[ISS.to_string()], now).map(|_| ());
        assert_eq!(got, expected, "{token}");
    }

    #[test]
    fn tokens_carry_kubernetes_claims_and_verify_until_they_expire() {
        let k = key();
        let c = claims(1000, 4600);
        let token = k.sign(&c).unwrap();
        assert_eq!(k.verify(&token, ISS, &[ISS.into()], 1000).unwrap(), c);
        let payload: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            payload["kubernetes.io"],
            serde_json::json!({"namespace": "a", "serviceaccount": {"name": "default", "uid": "sa-uid"}, "pod": {"name": "web", "uid": "pod-uid"}})
        );
        assert_eq!(payload["sub"], "system:serviceaccount:a:default");
        check(&k, &token, 4599, Ok(()));
        check(&k, &token, 4600, Err(TokenError::Expired));
        check(&k, &token, 1000 - 61, Err(TokenError::NotYetValid));
        check(&k, &token, 1000 - 60, Ok(()));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let k = key();
        let token = k.sign(&claims(1000, 4600)).unwrap();
        // Another key's token is not this key's business.
        check(&key(), &token, 1000, Err(TokenError::NotOurs));
        check(&k, "s3cret", 1000, Err(TokenError::NotOurs));
        check(&k, "a.b.c", 1000, Err(TokenError::NotOurs));
        // A changed payload keeps the header (and kid) but not the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut forged = claims(1000, 9_999_999);
        forged.sub = "system:serviceaccount:kube-system:admin".into();
        parts[1] = b64(&serde_json::to_vec(&forged).unwrap());
        check(&k, &parts.join("."), 1000, Err(TokenError::BadSignature));
        let mut wrong = claims(1000, 4600);
        wrong.iss = "elsewhere".into();
        check(
            &k,
            &k.sign(&wrong).unwrap(),
            1000,
            Err(TokenError::WrongIssuer("elsewhere".into())),
        );
        let mut wrong = claims(1000, 4600);
        wrong.aud = vec!["vault".into()];
        check(
            &k,
            &k.sign(&wrong).unwrap(),
            1000,
            Err(TokenError::WrongAudience(vec!["vault".into()])),
        );
    }

    #[test]
    fn keys_come_from_pem_pkcs8() {
        let pem = generate_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        // The same PEM is the same key: tokens of one verify with the other (several servers).
        let (a, b) = (
            TokenKey::from_pem(&pem).unwrap(),
            TokenKey::from_pem(&pem).unwrap(),
        );
        assert_eq!(a.kid(), b.kid());
        check(&b, &a.sign(&claims(1, 700)).unwrap(), 1, Ok(()));
        assert_eq!(TokenKey::from_pem("nope").unwrap_err(), KeyError::NotPem);
        assert_eq!(
            TokenKey::from_pem("-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----")
                .unwrap_err(),
            KeyError::Base64
        );
        assert!(matches!(
            TokenKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
            Err(KeyError::Rejected(_))
        ));
    }
}
