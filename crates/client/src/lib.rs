//! The typed client of the kumo API, with informers, a work queue and the controller runtime
//! every loop runs on (`controller`).
//!
//! Every component (scheduler, controllers, agent, CLI) reaches the API through this crate;
//! none reads the store.

pub mod client;
pub mod clock;
pub mod config;
pub mod controller;
pub mod data;
pub mod error;
pub mod events;
pub mod informer;
pub mod leader;
pub mod queue;
pub mod retry;

#[cfg(test)]
mod leader_tests;
#[cfg(test)]
mod tls_tests;

pub use client::{
    with_query, Client, ExecParams, LineStream, ListParams, LogParams, WatchStream, Watched,
};
pub use config::{ClientConfig, DEFAULT_SERVER};
pub use controller::{Controller, Metrics, Pass, Passed};
pub use error::ClientError;
pub use events::{EventRecorder, EventType};
pub use informer::{cache_key, Change, Informer};
pub use queue::WorkQueue;
pub use retry::{guard, guard_pure, Backoff, Failure, Retry};
