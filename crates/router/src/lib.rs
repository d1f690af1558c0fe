//! kumo's L7 router: HTTP/1.1, HTTP/2 (h2c and TLS with ALPN) and gRPC, balanced per request.
//!
//! The router is a library: [`Router::start`] binds the listeners and serves until the shutdown
//! future resolves, following a [`tokio::sync::watch`] of [`RouteTable`]s. Whoever owns the
//! routes (the App controller, or a test) builds the table; the router knows nothing of the API.
#![forbid(unsafe_code)]

mod access;
mod access_log;
mod balance;
mod body;
mod config;
mod error;
mod h1;
mod headers;
mod health;
mod metrics;
mod proxy;
mod respond;
mod rng;
mod server;
mod snapshot;
mod table;
mod tls;
mod upgrade;
mod upstream;

pub use access_log::AccessLog;
pub use config::{RouterConfig, TlsSource};
pub use error::RouterError;
pub use metrics::Metrics;
pub use server::{Router, RouterHandle};
pub use table::{BackendProtocol, Endpoint, Route, RouteTable};
