//! The cluster CA: makes and reads back certificates (rcgen, x509-parser) and builds the rustls
//! configurations that serve them or trust them. Pure and synchronous: where the files live,
//! when a certificate is renewed and who may ask for one is the caller's to say.
#![forbid(unsafe_code)]

mod pinned;
mod rotating;

#[cfg(test)]
mod tests;

pub use pinned::PinnedCa;
pub use rotating::RotatingCert;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the cluster CA is valid (kubeadm's CA: ten years).
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a leaf certificate is valid unless the caller says otherwise (kubeadm: one year).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far back a certificate's validity starts, so a peer whose clock is slightly behind
/// accepts it at once.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The start of the CA's common name; a random suffix follows, so that a certificate of
/// another kumo cluster's CA is an unknown issuer to this one, not a bad signature.
pub const CA_COMMON_NAME: &str = "kumo-ca";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot make the certificate: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("{what} is not valid PEM: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("{what} is not a valid certificate: {detail}")]
    Certificate { what: &'static str, detail: String },
    #[error("not a valid certificate signing request: {0}")]
    Csr(String),
    #[error("{0:?} is not a valid DNS name or IP address")]
    Name(String),
    #[error("tls configuration: {0}")]
    Tls(#[source] rustls::Error),
    #[error("the client certificate verifier: {0}")]
    Verifier(String),
}

/// A certificate and its private key, both PEM, and when the certificate expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

/// What a leaf certificate may be used for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication (serverAuth).
    Server,
    /// TLS client authentication (clientAuth).
    Client,
}

/// The cluster's certificate authority: its certificate and the key that signs with it.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA (ECDSA P-256), valid for [`CA_VALIDITY`].
    pub fn generate() -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let mut suffix = [0u8; 4];
        random(&mut suffix)?;
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{CA_COMMON_NAME}-{suffix}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_VALIDITY)?;
        let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA as written by [`Ca::cert_pem`] and [`Ca::key_pem`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Pem {
            what: "the CA key",
            detail: e.to_string(),
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| PkiError::Certificate {
                what: "the CA certificate",
                detail: e.to_string(),
            })?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM (to be stored 0600).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A server certificate (serverAuth) for `names` (DNS names or IP addresses) with a new key.
    pub fn issue_server(&self, names: &[String], valid_for: Duration) -> Result<Issued, PkiError> {
        let mut params = leaf(Usage::Server, valid_for)?;
        params.subject_alt_names = sans(names)?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        self.issue(params)
    }

    /// A client certificate (clientAuth) for the user `common_name` in the groups
    /// `organizations` (Kubernetes reads a client certificate's CN as the user, its O as groups).
    pub fn issue_client(
        &self,
        common_name: &str,
        organizations: &[&str],
        valid_for: Duration,
    ) -> Result<Issued, PkiError> {
        let mut params = leaf(Usage::Client, valid_for)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for o in organizations {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        self.issue(params)
    }

    /// Signs a certificate signing request's public key for `names` only, with `usage`: the
    /// request proves possession of the key; the names and usages it asks for are ignored,
    /// the caller decides them.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        names: &[String],
        usage: Usage,
        valid_for: Duration,
    ) -> Result<String, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| match e {
            rcgen::Error::CouldNotParseCertificationRequest => {
                PkiError::Csr("not a PEM CERTIFICATE REQUEST".into())
            }
            rcgen::Error::InvalidCertificationRequestSignature => {
                PkiError::Csr("its signature does not verify".into())
            }
            e => PkiError::Csr(e.to_string()),
        })?;
        let mut params = leaf(usage, valid_for)?;
        params.subject_alt_names = sans(names)?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, first);
        }
        csr.params = params;
        let cert = csr.signed_by(&self.issuer).map_err(PkiError::Generate)?;
        Ok(cert.pem())
    }

    fn issue(&self, params: CertificateParams) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(PkiError::Generate)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(PkiError::Generate)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: to_system_time(params.not_after),
        })
    }
}

/// A new key and a certificate signing request for it (PEM each): what an agent sends for its
/// serving certificate. The names in it are informative only; the CA decides.
pub fn new_csr(common_name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(PkiError::Generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let csr = params.serialize_request(&key).map_err(PkiError::Generate)?;
    let pem = csr.pem().map_err(PkiError::Generate)?;
    Ok((pem, key.serialize_pem()))
}

/// The parameters every leaf shares: not a CA, the usage's key usages, a random serial.
fn leaf(usage: Usage, valid_for: Duration) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![match usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, valid_for)?;
    Ok(params)
}

/// Sets a random serial and the validity from a little before now for `valid_for`.
fn validity(params: &mut CertificateParams, valid_for: Duration) -> Result<(), PkiError> {
    let mut serial = [0u8; 16];
    random(&mut serial)?;
    // A positive INTEGER: the top bit clear.
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + valid_for;
    Ok(())
}

fn random(buf: &mut [u8]) -> Result<(), PkiError> {
    provider()
        .secure_random
        .fill(buf)
        .map_err(|_| PkiError::Generate(rcgen::Error::RingUnspecified))
}

fn to_system_time(t: time::OffsetDateTime) -> SystemTime {
    match u64::try_from(t.unix_timestamp()) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    }
}

fn sans(names: &[String]) -> Result<Vec<SanType>, PkiError> {
    names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => name
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| PkiError::Name(name.clone())),
        })
        .collect()
}

/// The certificates of a PEM text, in order.
pub fn certs_from_pem(
    what: &'static str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem {
            what,
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Pem {
            what,
            detail: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn key_from_pem(what: &'static str, pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem {
        what,
        detail: e.to_string(),
    })
}

/// When the first certificate of a PEM text expires.
pub fn not_after(cert_pem: &str) -> Result<SystemTime, PkiError> {
    let der = certs_from_pem("the certificate", cert_pem)?.remove(0);
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::Certificate {
            what: "the certificate",
            detail: e.to_string(),
        })?;
    Ok(to_system_time(cert.validity().not_after.to_datetime()))
}

/// The DNS names and IP addresses (as text) a PEM certificate is for.
pub fn subject_alt_names(cert_pem: &str) -> Result<Vec<String>, PkiError> {
    use x509_parser::extensions::GeneralName;
    let der = certs_from_pem("the certificate", cert_pem)?.remove(0);
    let bad = |e: String| PkiError::Certificate {
        what: "the certificate",
        detail: e,
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| bad(e.to_string()))?
    else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// `sha256:<hex>` of a certificate's DER: how a join command names the CA to trust (the form
/// of kubeadm's `--discovery-token-ca-cert-hash`; kumo hashes the whole certificate).
pub fn ca_cert_hash(cert_pem: &str) -> Result<String, PkiError> {
    let der = certs_from_pem("the CA certificate", cert_pem)?.remove(0);
    Ok(der_hash(&der))
}

pub(crate) fn der_hash(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The crypto this crate uses, named rather than taken from the process default (another
/// crate of the binary may enable a second provider, and then there is no default).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(what: &'static str, ca_pem: &str) -> Result<rustls::RootCertStore, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem(what, ca_pem)? {
        roots.add(cert).map_err(PkiError::Tls)?;
    }
    Ok(roots)
}

/// A server configuration serving `chain_pem` (leaf first; the CA after it, so a client can pin
/// the CA by hash) with `key_pem`; with `client_ca_pem`, every client must present a
/// certificate chained to that CA with clientAuth.
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let provider = provider();
    let key = rustls::sign::CertifiedKey::from_der(
        certs_from_pem("the serving certificate", chain_pem)?,
        key_from_pem("the serving key", key_pem)?,
        &provider,
    )
    .map_err(PkiError::Tls)?;
    server_config_with(Arc::new(RotatingCert::new(key)), client_ca_pem)
}

/// A server configuration whose certificate `resolver` chooses (one that is renewed in place).
pub fn server_config_with(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    client_ca_pem: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(PkiError::Tls)?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots("the client CA", ca)?),
                provider,
            )
            .build()
            .map_err(|e| PkiError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting only `ca_pem`, presenting `identity` (certificate chain and
/// key, PEM) when given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(PkiError::Tls)?
        .with_root_certificates(roots("the CA certificate", ca_pem)?);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                certs_from_pem("the client certificate", cert)?,
                key_from_pem("the client key", key)?,
            )
            .map_err(PkiError::Tls)?,
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
