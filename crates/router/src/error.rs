//! Errors of starting the router (serving never fails as a whole: a bad request is a response).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// `listen_https` is set but `tls` is not.
    #[error("https listener {0} needs a tls source")]
    MissingTls(SocketAddr),
    /// A certificate or key file could not be read.
    #[error("cannot read {what} file {path}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A PEM document held no usable certificate or key.
    #[error("invalid {what} pem: {detail}")]
    Pem { what: &'static str, detail: String },
    /// rcgen could not make a development certificate.
    #[error("cannot generate a self-signed certificate")]
    SelfSigned(#[source] rcgen::Error),
    /// rustls refused the certificate and key.
    #[error("invalid tls configuration")]
    Tls(#[source] rustls::Error),
}
