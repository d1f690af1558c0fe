//! The kumo node agent (kubelet-like): registers the node, runs its pods' containers through
//! the container runtime (`kumo_runtime`: `runc`, `runsc` or `process`), reports their status,
//! and serves their logs and execs.
//!
//! The decisions are pure (`plan`, `status::pod_status`, `gpu_alloc`); the API and the runtime
//! are at the edges (`sync`, `node`, `logs`, `exec`). What the runtime needs of the agent's
//! sandboxes, images and GPUs it asks through its own traits, which the agent implements.
#![forbid(unsafe_code)]

pub mod agent;
pub mod app_port;
pub mod backoff;
pub mod config;
pub mod error;
pub mod exec;
pub mod gpu;
pub mod gpu_alloc;
pub mod gpu_usage;
pub mod hollow;
pub mod host_path;
pub mod image_gc;
pub mod images;
pub mod logs;
pub mod model;
pub mod node;
pub mod plan;
pub mod podnet;
pub mod probe;
pub mod pull_secrets;
pub mod pulls;
pub mod sandbox;
pub mod service_account;
pub mod serving_cert;
pub mod status;
pub mod sync;
pub mod tail;
pub mod task_data;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod oci_tests;

pub use agent::run;
pub use config::AgentConfig;
pub use error::AgentError;
pub use gpu::{FakeGpus, GpuDiscovery, NvmlGpus};
pub use kumo_runtime::RuntimeError;
pub use kumo_runtime::{Runtime, ShimRuntime};
pub use model::{PodRuntimeState, SyncParams};
pub use plan::{plan, Action};
pub use status::pod_status;
