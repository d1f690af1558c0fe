//! The shim runtime: each container run is supervised by a `kumo shim`, which records its exit;
//! a [`Driver`] says how a run of its runtime class is launched (`process`: a host process;
//! `runc`/`runsc`: an OCI bundle). Every runtime class is a `ShimRuntime` of its driver.
//!
//! Exit detection: for a container it started, the runtime awaits its shim child, which exits
//! right after writing the exit file. For a container adopted after an agent restart (the shim
//! is no longer our child), it polls every [`ADOPTED_POLL`] for the exit file and the liveness
//! of the container and shim (pid plus start time, so a reused pid is not mistaken for ours).

use super::driver::{Driver, Refusal, RunPaths};
use super::{Runtime, RuntimeEvent, StartOutcome};
use crate::error::RuntimeError;
use crate::layout::{is_safe_component, Layout};
use crate::record::{
    read_json, write_json, ContainerRecord, ExitRecord, PodRecord, START_ERROR_CODE,
};
use crate::shim::Handshake;
use crate::state::PodRuntimeState;
use crate::sys::Sys;
use kumo_api::pod::ContainerStateTerminated;
use kumo_api::{Pod, Time};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// How often an adopted container is checked for its exit.
pub const ADOPTED_POLL: Duration = Duration::from_millis(500);
/// How long to wait for a container to go after SIGKILL before giving up on waiting.
const AFTER_SIGKILL: Duration = Duration::from_secs(10);

/// The shim runtime: one per runtime class, its [`Driver`] saying how a run is launched;
/// cheap to clone.
#[derive(Clone)]
pub struct ShimRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    layout: Layout,
    shim: ShimCommand,
    /// The shim started ahead for the next container.
    standby: launch::Standby,
    driver: Arc<dyn Driver>,
    sys: Arc<dyn Sys>,
    events: mpsc::UnboundedSender<RuntimeEvent>,
    pods: Mutex<BTreeMap<String, PodEntry>>,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Ended runs whose release (cgroups, root filesystem) is under way, by (uid, container):
    /// the container's next run waits for it.
    releasing: Mutex<BTreeMap<(String, String), watch::Receiver<bool>>>,
}

struct PodEntry {
    record: PodRecord,
    containers: BTreeMap<String, ContainerEntry>,
}

struct ContainerEntry {
    record: ContainerRecord,
    /// Turns true when the current run has exited.
    exited: watch::Sender<bool>,
    /// The agent is stopping this run.
    killing: bool,
}

impl ContainerEntry {
    fn new(record: ContainerRecord) -> Self {
        let (exited, _) = watch::channel(record.terminated.is_some());
        ContainerEntry {
            record,
            exited,
            killing: false,
        }
    }
}

/// Identifies one run of a container, so a late exit report cannot touch a newer run.
#[derive(Debug, Clone)]
struct RunKey {
    uid: String,
    container: String,
    restart_count: i32,
}

impl ShimRuntime {
    /// Opens a shim runtime of `driver`'s class on `data_dir`, re-adopting what is recorded there.
    pub fn with_driver(
        data_dir: &Path,
        shim: ShimCommand,
        sys: Arc<dyn Sys>,
        driver: Arc<dyn Driver>,
        events: mpsc::UnboundedSender<RuntimeEvent>,
    ) -> Result<Self, RuntimeError> {
        let layout = Layout::new(data_dir);
        let pods_dir = layout.pods_dir();
        std::fs::create_dir_all(&pods_dir).map_err(|e| RuntimeError::io(&pods_dir, e))?;
        crate::layout::spread_subdirs(&pods_dir);
        let rt = ShimRuntime {
            inner: Arc::new(Inner {
                layout,
                shim,
                standby: launch::Standby::default(),
                driver,
                sys,
                events,
                pods: Mutex::new(BTreeMap::new()),
                tasks: Mutex::new(Vec::new()),
                releasing: Mutex::default(),
            }),
        };
        rt.adopt_all()?;
        Ok(rt)
    }

    fn lock_pods(&self) -> MutexGuard<'_, BTreeMap<String, PodEntry>> {
        self.inner.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    fn spawn_task(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut).abort_handle();
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    fn read_exit(&self, uid: &str, container: &str) -> Option<ExitRecord> {
        let path = self.layout().exit_file(uid, container);
        match read_json(&path) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable exit file");
                None
            }
        }
    }

    /// Records the end of a run (once) and tells the agent.
    async fn finish_run(&self, key: &RunKey, terminated: ContainerStateTerminated) {
        // A SIGKILL while the memory cgroup's OOM counter rose is the OOM killer's.
        let oom_now = self.inner.driver.oom_kills(&key.uid, &key.container);
        // The exit is told first and the run's release follows (on cgroup v1 removing a cgroup
        // just emptied takes milliseconds); a restart of the container waits for the release.
        let run = (key.uid.clone(), key.container.clone());
        let (released, release_seen) = watch::channel(false);
        self.lock_releasing().insert(run.clone(), release_seen);
        if let Some(event) = self.record_exit(key, terminated, oom_now) {
            let _ = self.inner.events.send(event);
        }
        let releasing = std::time::Instant::now();
        self.inner.driver.release(&key.uid, &key.container).await;
        tracing::debug!(
            uid = %key.uid,
            container = %key.container,
            release_ms = releasing.elapsed().as_secs_f64() * 1000.0,
            "container released"
        );
        let _ = released.send(true);
        let mut map = self.lock_releasing();
        if map
            .get(&run)
            .is_some_and(|rx| rx.same_channel(&released.subscribe()))
        {
            map.remove(&run);
        }
    }

    fn lock_releasing(&self) -> MutexGuard<'_, BTreeMap<(String, String), watch::Receiver<bool>>> {
        self.inner
            .releasing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the releases of the pod's ended runs (of `container` only, when given) are
    /// done.
    async fn released(&self, uid: &str, container: Option<&str>) {
        let pending: Vec<watch::Receiver<bool>> = self
            .lock_releasing()
            .iter()
            .filter(|((u, c), _)| u == uid && container.is_none_or(|name| name == c))
            .map(|(_, rx)| rx.clone())
            .collect();
        for mut rx in pending {
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    /// Records how the run ended (on disk and in memory); the event to tell, unless the run is
    /// not the container's current one or its end was recorded before.
    fn record_exit(
        &self,
        key: &RunKey,
        mut terminated: ContainerStateTerminated,
        oom_now: Option<u64>,
    ) -> Option<RuntimeEvent> {
        tracing::debug!(
            uid = %key.uid,
            container = %key.container,
            finished_at = ?terminated.finished_at,
            "container ended"
        );
        {
            let mut pods = self.lock_pods();
            let pod = pods.get_mut(&key.uid)?;
            let entry = pod.containers.get_mut(&key.container)?;
            if entry.record.restart_count != key.restart_count || entry.record.terminated.is_some()
            {
                return None;
            }
            if terminated.signal == Some(9) && oom_rose(entry.record.oom_kills_at_start, oom_now) {
                terminated.reason = Some("OOMKilled".into());
            }
            entry.record.terminated = Some(terminated.clone());
            let path = self.layout().state_file(&key.uid, &key.container);
            if let Err(e) = write_json(&path, &entry.record) {
                tracing::warn!(path = %path.display(), error = %e, "cannot record container exit");
            }
            let killed = std::mem::take(&mut entry.killing);
            entry.exited.send_replace(true);
            Some(RuntimeEvent::Exited {
                pod: pod.record.clone(),
                container: key.container.clone(),
                terminated,
                killed,
            })
        }
    }

    /// Records a run that never got a process.
    fn record_start_failure(
        &self,
        pod: &PodRecord,
        container: &str,
        mut record: ContainerRecord,
        message: String,
    ) -> Result<StartOutcome, RuntimeError> {
        let now = chrono::Utc::now();
        record.pid = None;
        record.terminated = Some(ContainerStateTerminated {
            exit_code: START_ERROR_CODE,
            signal: None,
            reason: Some("StartError".into()),
            message: Some(message.clone()),
            started_at: Some(record.started_at),
            finished_at: Some(now),
        });
        self.store(pod, container, record)?;
        Ok(StartOutcome::Failed(message))
    }

    fn store(
        &self,
        pod: &PodRecord,
        container: &str,
        record: ContainerRecord,
    ) -> Result<(), RuntimeError> {
        let path = self.layout().state_file(&pod.uid, container);
        write_json(&path, &record).map_err(|e| RuntimeError::io(&path, e))?;
        let mut pods = self.lock_pods();
        let entry = pods.entry(pod.uid.clone()).or_insert_with(|| PodEntry {
            record: pod.clone(),
            containers: BTreeMap::new(),
        });
        entry
            .containers
            .insert(container.to_string(), ContainerEntry::new(record));
        Ok(())
    }

    fn prepare_dirs(&self, pod: &PodRecord, container: &str) -> Result<(), RuntimeError> {
        let l = self.layout();
        for dir in [
            l.pod_dir(&pod.uid),
            l.work_dir(&pod.uid),
            l.container_dir(&pod.uid, container),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
        }
        let path = l.pod_record(&pod.uid);
        if !path.exists() {
            write_json(&path, pod).map_err(|e| RuntimeError::io(&path, e))?;
        }
        for stale in [
            l.exit_file(&pod.uid, container),
            l.pid_file(&pod.uid, container),
        ] {
            match std::fs::remove_file(&stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RuntimeError::io(&stale, e)),
            }
        }
        Ok(())
    }
}

/// Awaits a shim this runtime spawned, then records how its container ended.
async fn wait_spawned(
    rt: ShimRuntime,
    key: RunKey,
    mut child: tokio::process::Child,
    mut output: launch::ShimOutput,
    started_at: Time,
) {
    // A shim that says `exited` has written the exit record: the container's end is known
    // before the shim itself finishes (it may still be waiting out cgroup moves).
    let told = async {
        while let Ok(Some(line)) = output.next_line().await {
            if crate::shim::is_exited_line(&line) {
                return true;
            }
        }
        false
    };
    let told = tokio::select! {
        _ = child.wait() => false,
        told = told => told,
    };
    if told {
        // Reaped beside, so that no zombie shim is left.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
    } else {
        let _ = child.wait().await;
    }
    let terminated = match rt.read_exit(&key.uid, &key.container) {
        Some(exit) => exit.terminated(Some(started_at)),
        None => lost(
            started_at,
            "the container's shim ended without recording an exit status",
        ),
    };
    rt.finish_run(&key, terminated).await;
}

fn oom_rose(before: Option<u64>, now: Option<u64>) -> bool {
    matches!((before, now), (Some(b), Some(n)) if n > b)
}

fn lost(started_at: Time, message: &str) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: 255,
        signal: None,
        reason: Some("Unknown".into()),
        message: Some(message.into()),
        started_at: Some(started_at),
        finished_at: Some(chrono::Utc::now()),
    }
}

fn pod_record(pod: &Pod) -> Result<PodRecord, RuntimeError> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if !is_safe_component(&uid) {
        return Err(RuntimeError::InvalidContainer(format!(
            "pod {:?} has no usable uid",
            pod.metadata.name
        )));
    }
    Ok(PodRecord {
        namespace: pod.metadata.ns().to_string(),
        name: pod.metadata.name.clone(),
        uid,
    })
}

#[async_trait::async_trait]
impl Runtime for ShimRuntime {
    fn name(&self) -> &'static str {
        self.inner.driver.class()
    }

    async fn start(&self, pod: &Pod, index: usize) -> Result<StartOutcome, RuntimeError> {
        let record = pod_record(pod)?;
        let container = pod.spec.containers.get(index).ok_or_else(|| {
            RuntimeError::InvalidContainer(format!("pod {} has no container {index}", record.key()))
        })?;
        let name = container.name.as_str();
        if !is_safe_component(name) {
            return Err(RuntimeError::InvalidContainer(format!(
                "invalid container name {name:?}"
            )));
        }
        let (restart_count, last_terminated) = {
            let pods = self.lock_pods();
            match pods.get(&record.uid).and_then(|p| p.containers.get(name)) {
                None => (0, None),
                Some(e) => match &e.record.terminated {
                    Some(t) => (e.record.restart_count + 1, Some(t.clone())),
                    None => {
                        return Err(RuntimeError::InvalidContainer(format!(
                            "container {name:?} of pod {} is already running",
                            record.key()
                        )))
                    }
                },
            }
        };
        // The previous run's cgroups and root filesystem go before this run makes its own.
        self.released(&record.uid, Some(name)).await;
        self.prepare_dirs(&record, name)?;
        let l = self.layout();
        let _ = std::fs::remove_file(l.log_file(&record.uid, name, restart_count - 2));
        let started_at = chrono::Utc::now();
        let mut rec = ContainerRecord {
            restart_count,
            pid: None,
            shim_pid: None,
            proc_start_time: None,
            shim_start_time: None,
            started_at,
            terminated: None,
            last_terminated,
            oom_kills_at_start: None,
            runtime_id: None,
        };
        let paths = RunPaths {
            uid: record.uid.clone(),
            pod_name: record.name.clone(),
            container: name.to_string(),
            restart_count,
            container_dir: l.container_dir(&record.uid, name),
            work_dir: l.work_dir(&record.uid),
            exit_file: l.exit_file(&record.uid, name),
            log_file: l.log_file(&record.uid, name, restart_count),
            pid_file: l.pid_file(&record.uid, name),
        };
        let began = std::time::Instant::now();
        let launch = match self.inner.driver.prepare(pod, index, &paths).await {
            Ok(launch) => launch,
            Err(Refusal::StartError(message)) => {
                return self.record_start_failure(&record, name, rec, message)
            }
            Err(Refusal::Config(message)) => return Ok(StartOutcome::ConfigError(message)),
        };
        let prepared = began.elapsed();
        rec.oom_kills_at_start = launch.oom_kills_at_start;
        rec.runtime_id = launch.runtime_id.clone();
        match self
            .spawn_shim(&launch.shim, &launch.env, &launch.cwd)
            .await
        {
            Err(message) => {
                self.inner.driver.release(&record.uid, name).await;
                self.record_start_failure(&record, name, rec, message)
            }
            Ok((mut child, Handshake::Error(message), _)) => {
                let _ = child.wait().await;
                self.inner.driver.release(&record.uid, name).await;
                self.record_start_failure(&record, name, rec, message)
            }
            Ok((child, Handshake::Pid(pid), output)) => {
                tracing::debug!(
                    uid = %record.uid,
                    container = name,
                    prepare_ms = prepared.as_secs_f64() * 1000.0,
                    shim_ms = (began.elapsed() - prepared).as_secs_f64() * 1000.0,
                    "container started by its shim"
                );
                let sys = &self.inner.sys;
                rec.pid = Some(pid);
                rec.shim_pid = child.id().and_then(|p| i32::try_from(p).ok());
                rec.proc_start_time = sys.start_time(pid);
                rec.shim_start_time = rec.shim_pid.and_then(|p| sys.start_time(p));
                self.store(&record, name, rec)?;
                let key = RunKey {
                    uid: record.uid.clone(),
                    container: name.to_string(),
                    restart_count,
                };
                self.spawn_task(wait_spawned(self.clone(), key, child, output, started_at));
                Ok(StartOutcome::Started { pid })
            }
        }
    }

    async fn kill(&self, uid: &str, container: &str, grace: Duration) -> Result<(), RuntimeError> {
        let (record, mut exited) = {
            let mut pods = self.lock_pods();
            let entry = pods
                .get_mut(uid)
                .and_then(|p| p.containers.get_mut(container))
                .ok_or_else(|| RuntimeError::NotFound {
                    uid: uid.into(),
                    container: container.into(),
                })?;
            if entry.record.terminated.is_some() {
                return Ok(());
            }
            entry.killing = true;
            (entry.record.clone(), entry.exited.subscribe())
        };
        let driver = &self.inner.driver;
        driver.signal(&record, Signal::SIGTERM).await;
        if tokio::time::timeout(grace, exited.wait_for(|e| *e))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tracing::info!(uid, container, pid = ?record.pid, "grace period over; killing container");
        driver.signal(&record, Signal::SIGKILL).await;
        if tokio::time::timeout(AFTER_SIGKILL, exited.wait_for(|e| *e))
            .await
            .is_err()
        {
            tracing::warn!(uid, container, "container did not exit after SIGKILL");
        }
        Ok(())
    }

    fn exec_command(
        &self,
        pod: &Pod,
        index: usize,
        command: &[String],
        tty: bool,
    ) -> Result<super::ExecSpec, super::ExecRefusal> {
        use super::ExecRefusal;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let name = pod
            .spec
            .containers
            .get(index)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let record = self
            .lock_pods()
            .get(&uid)
            .and_then(|p| p.containers.get(&name))
            .map(|e| e.record.clone())
            .filter(|r| r.terminated.is_none() && r.pid.is_some())
            .ok_or_else(|| {
                ExecRefusal::NotRunning(format!(
                    "container {name} of pod {} is not running",
                    pod.metadata.name
                ))
            })?;
        self.inner
            .driver
            .exec(
                pod,
                index,
                &record,
                &self.layout().work_dir(&uid),
                command,
                tty,
            )
            .map_err(ExecRefusal::Unsupported)
    }

    fn state(&self, uid: &str) -> PodRuntimeState {
        let pods = self.lock_pods();
        PodRuntimeState {
            containers: pods
                .get(uid)
                .map(|p| {
                    p.containers
                        .iter()
                        .map(|(name, e)| (name.clone(), e.record.runtime_state()))
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    fn pods(&self) -> Vec<PodRecord> {
        self.lock_pods()
            .values()
            .map(|p| p.record.clone())
            .collect()
    }

    fn pods_named(&self, namespace: &str, name: &str) -> Vec<PodRecord> {
        self.lock_pods()
            .values()
            .filter(|p| p.record.namespace == namespace && p.record.name == name)
            .map(|p| p.record.clone())
            .collect()
    }

    // A lookup, not the trait's scan of `pods()`: `Runtimes` asks it on every call by uid, and
    // a node keeps the records of its ended pods (1,000 finished task replicas made every
    // `state` call clone 1,000 records).
    fn has_pod(&self, uid: &str) -> bool {
        self.lock_pods().contains_key(uid)
    }

    fn log_path(&self, uid: &str, container: &str, restart_count: i32) -> PathBuf {
        self.layout().log_file(uid, container, restart_count)
    }

    async fn cleanup(&self, uid: &str) -> Result<(), RuntimeError> {
        if !is_safe_component(uid) {
            return Err(RuntimeError::InvalidContainer(format!(
                "invalid pod uid {uid:?}"
            )));
        }
        {
            let mut pods = self.lock_pods();
            if pods
                .get(uid)
                .is_some_and(|p| p.containers.values().any(|c| c.record.terminated.is_none()))
            {
                return Err(RuntimeError::InvalidContainer(format!(
                    "pod {uid} still has running containers"
                )));
            }
            pods.remove(uid);
        }
        // What an ended run held goes before the pod's directories do.
        self.released(uid, None).await;
        self.inner.driver.cleanup(uid).await?;
        let dir = self.layout().pod_dir(uid);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io(dir, e)),
        }
    }

    async fn shutdown(&self) {
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
        self.inner.standby.release().await;
    }
}

mod adoption;
mod launch;

pub use launch::ShimCommand;

#[cfg(test)]
#[path = "shim_runtime_tests.rs"]
mod tests;
