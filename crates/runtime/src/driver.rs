//! What differs between runtime classes under the shared shim machinery: how a container run
//! is prepared and launched, how it is signalled, and what is released after it.

use crate::error::RuntimeError;
use crate::record::ContainerRecord;
use crate::shim::ShimArgs;
use kumo_api::Pod;
use nix::sys::signal::Signal;
use std::path::PathBuf;

/// Where one run of a container keeps its files (all under the container's directory).
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub uid: String,
    pub pod_name: String,
    pub container: String,
    pub restart_count: i32,
    pub container_dir: PathBuf,
    pub work_dir: PathBuf,
    pub exit_file: PathBuf,
    pub log_file: PathBuf,
    pub pid_file: PathBuf,
}

/// How to launch a run: the shim's arguments, environment and working directory.
#[derive(Debug, Clone)]
pub struct Launch {
    pub shim: ShimArgs,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// `runc://ID` and the like, for OCI runtimes.
    pub runtime_id: Option<String>,
    /// The memory cgroup's OOM-kill counter before the run (process runtime).
    pub oom_kills_at_start: Option<u64>,
}

/// Why a run was not launched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The run failed to start: recorded as exited with reason `StartError`.
    StartError(String),
    /// The container's configuration cannot be run as it is (Kubernetes'
    /// `CreateContainerConfigError`): nothing is recorded, the container keeps waiting.
    Config(String),
}

/// One runtime class's way of running containers.
#[async_trait::async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The runtime class (`process`, `runc`, `runsc`).
    fn class(&self) -> &'static str;

    /// Prepares run `paths.restart_count` of container `index`; leaves nothing behind when it
    /// refuses.
    async fn prepare(&self, pod: &Pod, index: usize, paths: &RunPaths) -> Result<Launch, Refusal>;

    /// Sends `signal` to a running container.
    async fn signal(&self, record: &ContainerRecord, signal: Signal);

    /// The memory cgroup's OOM-kill counter of a container, where the agent reads it.
    fn oom_kills(&self, _uid: &str, _container: &str) -> Option<u64> {
        None
    }

    /// A run ended: releases what it held (cgroups, the root filesystem's mount).
    async fn release(&self, uid: &str, container: &str);

    /// The pod is being forgotten (all its runs ended): removes what the driver made for it
    /// outside the pod's directory, and what inside needs more than a recursive delete.
    async fn cleanup(&self, uid: &str) -> Result<(), RuntimeError>;

    /// A command running `command` inside the running container `index` of `pod` as `record`
    /// describes it; `work_dir` is the pod's working directory.
    fn exec(
        &self,
        _pod: &Pod,
        _index: usize,
        _record: &ContainerRecord,
        _work_dir: &std::path::Path,
        _command: &[String],
        _tty: bool,
    ) -> Result<super::ExecSpec, String> {
        Err(format!(
            "runtime {} cannot exec into containers",
            self.class()
        ))
    }
}
