//! TLS termination: rustls (ring) with ALPN `h2` and `http/1.1`, certificates from PEM files,
//! PEM text, or made on the spot by rcgen for development.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSource;
use crate::error::RouterError;

pub(crate) struct Tls {
    pub acceptor: TlsAcceptor,
    /// The certificate chain served, as PEM (what a development client must trust).
    pub certificate_pem: String,
}

pub(crate) fn build(source: &TlsSource) -> Result<Tls, RouterError> {
    let (chain, key) = match source {
        TlsSource::Files { cert, key } => (read(cert, "certificate")?, read(key, "key")?),
        TlsSource::Pem { cert_chain, key } => (cert_chain.clone(), key.clone()),
        TlsSource::SelfSigned { names } => {
            let names = if names.is_empty() {
                vec!["localhost".to_string()]
            } else {
                names.clone()
            };
            let made =
                rcgen::generate_simple_self_signed(names).map_err(RouterError::SelfSigned)?;
            (made.cert.pem(), made.signing_key.serialize_pem())
        }
    };
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RouterError::Pem {
            what: "certificate",
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(RouterError::Pem {
            what: "certificate",
            detail: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| RouterError::Pem {
        what: "key",
        detail: e.to_string(),
    })?;
    // The provider is named rather than taken from the process default: another crate of the
    // binary may enable aws-lc-rs too, and then there is no default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(RouterError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(RouterError::Tls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        certificate_pem: chain,
    })
}

fn read(path: &Path, what: &'static str) -> Result<String, RouterError> {
    std::fs::read_to_string(path).map_err(|source| RouterError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sources_are_errors() {
        let dir = tempfile_dir();
        let missing = TlsSource::Files {
            cert: dir.join("nope.pem"),
            key: dir.join("nope.key"),
        };
        assert!(matches!(
            build(&missing),
            Err(RouterError::ReadFile {
                what: "certificate",
                ..
            })
        ));
        let empty = TlsSource::Pem {
            cert_chain: "not pem".into(),
            key: "not pem".into(),
        };
        assert!(matches!(
            build(&empty),
            Err(RouterError::Pem {
                what: "certificate",
                ..
            })
        ));
        let made = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let no_key = TlsSource::Pem {
            cert_chain: made.cert.pem(),
            key: "garbage".into(),
        };
        assert!(matches!(
            build(&no_key),
            Err(RouterError::Pem { what: "key", .. })
        ));
        let good = TlsSource::Pem {
            cert_chain: made.cert.pem(),
            key: made.signing_key.serialize_pem(),
        };
        assert!(build(&good).is_ok());
    }

    fn tempfile_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("kumo-router-{}", uuid::Uuid::new_v4()))
    }
}
