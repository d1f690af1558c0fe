//! The router against real hyper backends and clients on 127.0.0.1.

mod support;

mod balancing;
mod errors;
mod failures;
mod forwarding;
mod framing;
mod lifecycle;
mod observability;
mod streams;
mod swap;
mod tls;
