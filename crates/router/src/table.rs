//! The router's input: a table of routes, replaced as a whole whenever it changes.

use std::net::SocketAddr;
use std::time::Duration;

/// Every route the router serves. A new table replaces the old one atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub routes: Vec<Route>,
}

/// Requests for `hosts` (and, when set, paths under `path_prefix`) go to `endpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The app's name, used in logs, metrics and error bodies.
    pub app: String,
    /// Host names, matched without port and without regard to case.
    pub hosts: Vec<String>,
    /// Matched segment-wise: `/api` matches `/api` and `/api/x`, not `/apix`. The longest
    /// matching prefix of a host wins; `None` matches every path.
    pub path_prefix: Option<String>,
    /// What the backends speak.
    pub protocol: BackendProtocol,
    /// Ready endpoints: they get new requests.
    pub endpoints: Vec<Endpoint>,
    /// Time allowed for the backend's response head; zero means no limit.
    pub timeout: Duration,
    /// Endpoints on their way out: they get no new requests, but requests already sent to them
    /// finish.
    pub draining: Vec<Endpoint>,
}

/// The protocol spoken toward a route's backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    #[default]
    Http1,
    /// HTTP/2 over clear text with prior knowledge (gRPC).
    H2c,
}

/// One replica's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The replica's name (a pod name), for logs.
    pub id: String,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, id: impl Into<String>) -> Self {
        Endpoint {
            addr,
            id: id.into(),
        }
    }
}
