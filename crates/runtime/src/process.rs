//! The `process` runtime class: a [`ShimRuntime`] whose [`ProcessDriver`] runs a container as
//! its command on the host, in the runtime's cgroups for its limits.

use crate::cgroup::Cgroups;
use crate::driver::{Driver, Launch, Refusal, RunPaths};
use crate::env::{argv, environment};
use crate::error::RuntimeError;
use crate::record::ContainerRecord;
use crate::sandbox::PodSandboxes;
use crate::shim::binds::Bind;
use crate::shim::ShimArgs;
use crate::shim_runtime::{ShimCommand, ShimRuntime};
use crate::sys::Sys;
use crate::RuntimeEvent;
use kumo_api::Pod;
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the process runtime needs.
pub struct ProcessRuntimeConfig {
    pub data_dir: PathBuf,
    pub shim: ShimCommand,
    pub cgroups: Cgroups,
    pub sys: Arc<dyn Sys>,
    /// The node's pod sandboxes, where process pods' volumes are made.
    pub sandboxes: Option<Arc<dyn PodSandboxes>>,
}

/// Opens the `process` runtime: a [`ShimRuntime`] of the [`ProcessDriver`].
/// It opens on `data_dir`, re-adopting the containers recorded there: a live one
/// keeps running under supervision, an ended one gets its exit status from its exit file.
/// Must run inside a tokio runtime.
pub fn open(
    config: ProcessRuntimeConfig,
    events: mpsc::UnboundedSender<RuntimeEvent>,
) -> Result<ShimRuntime, RuntimeError> {
    let driver = Arc::new(ProcessDriver {
        cgroups: Arc::new(config.cgroups),
        sys: config.sys.clone(),
        sandboxes: config.sandboxes,
    });
    ShimRuntime::with_driver(&config.data_dir, config.shim, config.sys, driver, events)
}

/// How the `process` class launches, signals and releases a run.
pub struct ProcessDriver {
    pub cgroups: Arc<Cgroups>,
    pub sys: Arc<dyn Sys>,
    /// Where the pod's volumes are (made by the agent before the first container starts).
    pub sandboxes: Option<Arc<dyn PodSandboxes>>,
}

impl ProcessDriver {
    /// The container's volume mounts as binds from the pod's sandbox.
    fn binds(&self, pod: &Pod, container: &kumo_api::pod::Container) -> Result<Vec<Bind>, Refusal> {
        if container.volume_mounts.is_empty() {
            return Ok(Vec::new());
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let sandbox = self
            .sandboxes
            .as_ref()
            .and_then(|s| s.get(uid))
            .ok_or_else(|| Refusal::StartError("the pod's volumes are not ready".into()))?;
        container
            .volume_mounts
            .iter()
            .map(|m| {
                let source = sandbox.volumes.get(&m.name).ok_or_else(|| {
                    Refusal::Config(format!("volume {:?} is not available", m.name))
                })?;
                Ok(Bind {
                    source: source.clone(),
                    target: PathBuf::from(&m.mount_path),
                    read_only: m.read_only,
                })
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Driver for ProcessDriver {
    fn class(&self) -> &'static str {
        kumo_api::pod::RUNTIME_PROCESS
    }

    async fn prepare(&self, pod: &Pod, index: usize, p: &RunPaths) -> Result<Launch, Refusal> {
        let container = pod
            .spec
            .containers
            .get(index)
            .ok_or_else(|| Refusal::StartError(format!("no container {index}")))?;
        let command = argv(container).map_err(Refusal::StartError)?;
        let cwd = container
            .working_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| p.work_dir.clone());
        if !cwd.is_dir() {
            return Err(Refusal::StartError(format!(
                "working directory {:?} does not exist",
                cwd.display().to_string()
            )));
        }
        let binds = self.binds(pod, container)?;
        let cgroups = self
            .cgroups
            .setup(&p.uid, &p.container, &container.resources);
        Ok(Launch {
            shim: ShimArgs {
                exit_file: p.exit_file.clone(),
                log_file: p.log_file.clone(),
                pid_file: p.pid_file.clone(),
                cgroups,
                command,
                binds,
                ..ShimArgs::default()
            },
            env: environment(&pod.metadata.name, container),
            cwd,
            runtime_id: None,
            oom_kills_at_start: self.cgroups.oom_kills(&p.uid, &p.container),
        })
    }

    async fn signal(&self, record: &ContainerRecord, signal: Signal) {
        let Some(pid) = record.pid else { return };
        if let Some(start) = record.proc_start_time {
            if self.sys.start_time(pid) != Some(start) {
                return;
            }
        }
        if let Err(e) = self.sys.signal_group(pid, signal) {
            tracing::warn!(pid, error = %e, "cannot signal container");
        }
    }

    fn oom_kills(&self, uid: &str, container: &str) -> Option<u64> {
        self.cgroups.oom_kills(uid, container)
    }

    async fn release(&self, uid: &str, container: &str) {
        // On cgroup v1 an rmdir right after the last process left waits for the kernel
        // (7-10 ms measured here): not on one of the few async workers.
        let (cgroups, uid, container) =
            (self.cgroups.clone(), uid.to_string(), container.to_string());
        let _ =
            tokio::task::spawn_blocking(move || cgroups.remove_container(&uid, &container)).await;
    }

    async fn cleanup(&self, uid: &str) -> Result<(), RuntimeError> {
        let (cgroups, uid) = (self.cgroups.clone(), uid.to_string());
        let _ = tokio::task::spawn_blocking(move || cgroups.remove_pod(&uid)).await;
        Ok(())
    }

    fn exec(
        &self,
        pod: &Pod,
        index: usize,
        record: &ContainerRecord,
        work_dir: &std::path::Path,
        command: &[String],
        _tty: bool,
    ) -> Result<crate::ExecSpec, String> {
        let container = pod
            .spec
            .containers
            .get(index)
            .ok_or_else(|| format!("no container {index}"))?;
        let cwd = container
            .working_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| work_dir.to_path_buf());
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        Ok(crate::ExecSpec {
            argv: command.to_vec(),
            env: Some(environment(&pod.metadata.name, container)),
            cwd: Some(cwd),
            cgroups: self.cgroups.container_dirs(uid, &container.name),
            mount_ns_of: record.pid,
        })
    }
}
