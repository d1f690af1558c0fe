//! How the router listens, terminates TLS, and treats failing endpoints.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::access_log::AccessLog;

/// Where the TLS certificate and key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A PEM certificate chain (leaf first) and a PEM private key, read at start.
    Files { cert: PathBuf, key: PathBuf },
    /// The same, already in memory.
    Pem { cert_chain: String, key: String },
    /// A self-signed certificate for these DNS names, made at start (development only).
    /// [`crate::RouterHandle::tls_certificate_pem`] returns it so that clients can trust it.
    SelfSigned { names: Vec<String> },
}

/// The router's settings. Routes are not here: they arrive through a watch channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Plain-text listener (HTTP/1.1 and h2c with prior knowledge).
    pub listen_http: SocketAddr,
    /// TLS listener (ALPN `h2` and `http/1.1`); needs `tls`.
    pub listen_https: Option<SocketAddr>,
    pub tls: Option<TlsSource>,
    /// Consecutive failures (connect errors, timeouts, 5xx answers) that eject an endpoint;
    /// 0 disables ejection.
    pub eject_after: u32,
    /// How long an ejected endpoint rests before one probe request is let through.
    pub eject_for: Duration,
    /// Where the access log goes: one line per request.
    pub access_log: AccessLog,
    /// Limit on establishing a backend connection (a connect timeout is retried elsewhere).
    pub connect_timeout: Duration,
    /// On shutdown, how long open connections may finish their requests before being closed.
    pub drain_timeout: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen_http: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            listen_https: None,
            tls: None,
            eject_after: 5,
            eject_for: Duration::from_secs(10),
            access_log: AccessLog::Stderr,
            connect_timeout: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(30),
        }
    }
}
