//! A serving certificate that can be replaced while the server runs: each handshake takes the
//! current one, so a renewed certificate is served from the next connection on.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, PoisonError, RwLock};

#[derive(Debug)]
pub struct RotatingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl RotatingCert {
    pub fn new(key: CertifiedKey) -> RotatingCert {
        RotatingCert {
            current: RwLock::new(Arc::new(key)),
        }
    }

    /// From a PEM chain (leaf first) and its key.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<RotatingCert, crate::PkiError> {
        Ok(RotatingCert::new(certified(chain_pem, key_pem)?))
    }

    /// Serves `chain_pem` with `key_pem` from the next handshake on.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<(), crate::PkiError> {
        let key = Arc::new(certified(chain_pem, key_pem)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
        Ok(())
    }
}

fn certified(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, crate::PkiError> {
    CertifiedKey::from_der(
        crate::certs_from_pem("the serving certificate", chain_pem)?,
        crate::key_from_pem("the serving key", key_pem)?,
        &crate::provider(),
    )
    .map_err(crate::PkiError::Tls)
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}
