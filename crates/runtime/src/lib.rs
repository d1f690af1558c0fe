//! kumo's container runtime: runs a pod's containers on this node and reports their state.
//!
//! One trait, [`Runtime`], with the process runtime (host processes) and the OCI runtimes
//! (`runc`, `runsc`, bundles made by [`oci`]) behind it, all supervised by the shim ([`shim`]);
//! [`Runtimes`] routes each pod to the one of its class. It also holds what those need: cgroups,
//! `nsexec` (entering a container for exec), the records kept on disk ([`record`], [`layout`])
//! so that a restarted agent finds its containers again, and the kernel behind [`sys::Sys`].
//!
//! It knows a pod only as the spec it is given. It knows nothing of the API server, the
//! scheduler, the agent's sync loop, image pulls or how sandboxes are made: what it needs of
//! them is a small trait each ([`sandbox::PodSandboxes`], [`rootfs::RootfsMounter`],
//! [`gpus::GpuDevices`]) that the node agent implements.
#![forbid(unsafe_code)]

pub mod adopt;
pub mod cgroup;
pub mod cgroup_parent;
pub mod down;
pub mod driver;
pub mod env;
pub mod error;
pub mod gpus;
pub mod layout;
pub mod mounts;
pub mod multi;
pub mod nsexec;
pub mod oci;
pub mod process;
pub mod record;
pub mod rootfs;
pub mod sandbox;
pub mod shim;
pub mod shim_runtime;
pub mod state;
pub mod sys;

#[cfg(any(test, feature = "testing"))]
pub mod fixtures;

use crate::record::PodRecord;
use crate::state::PodRuntimeState;
use kumo_api::pod::ContainerStateTerminated;
use kumo_api::Pod;
use std::path::PathBuf;
use std::time::Duration;

pub use error::RuntimeError;
pub use multi::Runtimes;
pub use process::ProcessRuntimeConfig;
pub use shim_runtime::{ShimCommand, ShimRuntime};

/// The runtime class of a pod that names none (an OCI image run by runc).
pub const DEFAULT_RUNTIME_CLASS: &str = "runc";

/// The runtime class a pod asks for.
pub fn runtime_class(pod: &Pod) -> &str {
    pod.spec
        .runtime_class_name
        .as_deref()
        .unwrap_or(DEFAULT_RUNTIME_CLASS)
}

/// How a start went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// The container runs as process `pid`.
    Started { pid: i32 },
    /// It could not start; it is recorded as exited with reason `StartError` and this message.
    Failed(String),
    /// Its configuration cannot run (`CreateContainerConfigError`); nothing was recorded.
    ConfigError(String),
}

/// What a runtime tells the agent without being asked.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeEvent {
    /// A container ended; `killed` when it was being stopped by the agent.
    Exited {
        pod: PodRecord,
        container: String,
        terminated: ContainerStateTerminated,
        killed: bool,
    },
}

/// Runs containers and reports their state. Implementations keep their own records on disk so
/// that a restarted agent finds running containers again.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The runtime class this runtime serves.
    fn name(&self) -> &'static str;

    /// Starts container `index` of `pod`, or restarts it when it ran before (its restart count
    /// goes up by one). A container already running is an error.
    async fn start(&self, pod: &Pod, index: usize) -> Result<StartOutcome, RuntimeError>;

    /// Stops a container: SIGTERM to its process group, SIGKILL after `grace`; returns once it
    /// has exited. A container that is not running is left alone.
    async fn kill(&self, uid: &str, container: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// The actual state of a pod's containers (empty for an unknown pod).
    fn state(&self, uid: &str) -> PodRuntimeState;

    /// Every pod this runtime has state for.
    fn pods(&self) -> Vec<PodRecord>;

    /// The pods this runtime has state for named `namespace/name` (one, or two while a namesake
    /// replaces a deleted pod). Every sync asks it, and a node keeps its ended pods' records.
    fn pods_named(&self, namespace: &str, name: &str) -> Vec<PodRecord> {
        self.pods()
            .into_iter()
            .filter(|r| r.namespace == namespace && r.name == name)
            .collect()
    }

    /// The log file of run `restart_count` of a container.
    fn log_path(&self, uid: &str, container: &str, restart_count: i32) -> PathBuf;

    /// Forgets a pod whose containers have all stopped: removes its state, logs and cgroups.
    async fn cleanup(&self, uid: &str) -> Result<(), RuntimeError>;

    /// Stops supervising (the agent is shutting down); containers keep running, shims started
    /// ahead for the next containers end.
    async fn shutdown(&self);

    /// Whether this runtime has state for pod `uid`.
    fn has_pod(&self, uid: &str) -> bool {
        self.pods().iter().any(|p| p.uid == uid)
    }

    /// A command that runs `command` inside the running container `index` of `pod`
    /// (`kumo exec`); with `tty`, its stdio will be a terminal.
    fn exec_command(
        &self,
        _pod: &Pod,
        _index: usize,
        _command: &[String],
        _tty: bool,
    ) -> Result<ExecSpec, ExecRefusal> {
        Err(ExecRefusal::Unsupported(format!(
            "runtime {} cannot exec into containers",
            self.name()
        )))
    }
}

/// How to run a command inside a container: `argv` run through `kumo nsexec`, which first
/// joins `cgroups` and the mount namespace of process `mount_ns_of`, and moves to `cwd`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    /// The environment (replacing the agent's), when the runtime does not set it itself.
    pub env: Option<Vec<(String, String)>>,
    pub cwd: Option<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    pub mount_ns_of: Option<i32>,
}

/// Why an exec cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecRefusal {
    /// The container is not running (409).
    #[error("{0}")]
    NotRunning(String),
    /// This runtime or container cannot do it (400).
    #[error("{0}")]
    Unsupported(String),
}
