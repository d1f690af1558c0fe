//! The kumo node agent (kubelet-like): registers the node, runs its pods' containers through a
//! runtime (`runc`, `runsc` or `process`), reports their status, and serves their logs.
//!
//! The decisions are pure (`plan`, `status::pod_status`, `adopt::decide`, `cgroup::settings`);
//! the kernel and the API are at the edges (`runtime`, `sys`, `sync`, `node`, `logs`).
#![forbid(unsafe_code)]

pub mod adopt;
pub mod agent;
pub mod app_port;
pub mod backoff;
pub mod cgroup;
pub mod config;
pub mod error;
pub mod exec;
pub mod gpu;
pub mod gpu_alloc;
pub mod gpu_usage;
pub mod host_path;
pub mod image_gc;
pub mod images;
pub mod layout;
pub mod logs;
pub mod model;
pub mod mounts;
pub mod node;
pub mod nsexec;
pub mod plan;
pub mod probe;
pub mod pull_secrets;
pub mod pulls;
pub mod record;
pub mod runtime;
pub mod sandbox;
pub mod shim;
pub mod status;
pub mod sync;
pub mod sys;
pub mod tail;
pub mod task_data;

#[cfg(test)]
mod fixtures;

pub use agent::run;
pub use config::AgentConfig;
pub use error::{AgentError, RuntimeError};
pub use gpu::{FakeGpus, GpuDiscovery, NvmlGpus};
pub use model::{PodRuntimeState, SyncParams};
pub use plan::{plan, Action};
pub use runtime::{ProcessRuntime, Runtime};
pub use status::pod_status;
