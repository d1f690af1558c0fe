//! The pod worker: reconciles one pod key at a time, acting out `plan` and writing `pod_status`.

use crate::images::RootfsProvider;
use crate::model::{SyncParams, Waiting};
use crate::plan::{is_process_pod, plan, Action};
use crate::pulls::{decide, PullStep, PullTable, REASON_ERR_IMAGE_PULL};
use crate::sandbox::{SandboxError, Sandboxes};
use crate::status::pod_status;
use kumo_api::{ObjectMeta, Pod};
use kumo_client::{
    Client, ClientError, EventRecorder, EventType, Failure, Informer, Retry, WorkQueue,
};
use kumo_runtime::record::PodRecord;
use kumo_runtime::{Runtime, RuntimeEvent, StartOutcome};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Grace period for containers of a pod that vanished from the API without one.
const ORPHAN_GRACE: Duration = Duration::from_secs(30);
/// First retry of a failed pod sync; doubles per consecutive failure up to `RETRY_MAX`.
pub(crate) const RETRY_BASE: Duration = Duration::from_millis(400);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(30);
/// Waiting reason of a container whose configuration this node refuses to run.
pub const REASON_CONFIG_ERROR: &str = "CreateContainerConfigError";

/// What OCI pods need besides their runtime: images and sandboxes.
#[derive(Clone)]
pub struct OciParts {
    pub images: Arc<dyn RootfsProvider>,
    pub sandboxes: Arc<Sandboxes>,
    pub pulls: Arc<Mutex<PullTable>>,
}

/// Why one reconcile failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] ClientError),
    #[error(transparent)]
    Runtime(#[from] kumo_runtime::RuntimeError),
}

/// How a failed pod sync is logged.
pub fn report(key: &String, failure: &Failure<SyncError>, retry: &Retry) {
    let (delay, failures) = (retry.delay, retry.total);
    if let Failure::Panic(_) = failure {
        tracing::error!(pod = key, error = %failure, retry_in = ?delay, failures, "pod sync panicked");
    } else {
        tracing::warn!(pod = key, error = %failure, retry_in = ?delay, failures, "pod sync failed");
    }
}

/// A lock that a panic elsewhere does not poison for good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reconciles the pods bound to this node. Shared by the agent's concurrent syncs (one per pod
/// at a time, see `WorkQueue::claim`), so what it remembers sits behind locks that are never
/// held across an await.
pub struct PodWorker {
    pub client: Client,
    pub informer: Informer<Pod>,
    pub queue: WorkQueue<String>,
    pub runtime: Arc<dyn Runtime>,
    pub recorder: EventRecorder,
    pub params: SyncParams,
    /// (uid, container) stops in flight.
    killing: Arc<Mutex<BTreeSet<(String, String)>>>,
    /// Pods (uids) whose cleanup is running.
    cleaning: Arc<Mutex<BTreeSet<String>>>,
    /// What the worker remembers of each pod across syncs, by uid.
    pods: Mutex<BTreeMap<String, PodMemory>>,
    oci: Option<OciParts>,
    prober: Option<Arc<crate::probe::Prober>>,
    /// Hands out GPU devices to containers that ask for GPUs.
    gpus: Option<Arc<crate::gpu_alloc::GpuAllocator>>,
    /// MLTask datasets, output and scratch on this node.
    task_data: Option<Arc<crate::task_data::TaskData>>,
    /// Gets pods their service-account tokens (OCI parts needed: the token sits in the sandbox).
    service_accounts: Option<Arc<crate::service_account::ServiceAccountTokens>>,
}

/// What the worker remembers of one pod across syncs: made when first needed, forgotten as a
/// whole (`PodWorker::forget`).
#[derive(Debug, Default)]
struct PodMemory {
    /// The pod's grace period, for its containers once it is gone from the API.
    gone_grace: Option<Duration>,
    /// (container, restart count) already announced with a BackOff event.
    backoff_announced: BTreeSet<(String, i32)>,
    /// Why not-yet-started containers wait, by container name.
    waiting: BTreeMap<String, Waiting>,
    /// Its output was collected after its containers ended.
    collected: bool,
    /// When its service-account token is due to be replaced (none yet in this agent's life).
    token_refresh: Option<std::time::Instant>,
}

/// The steps that prepare a container's start, in order: the MLTask replica's data
/// directories, its service-account token, the pod's sandbox (and for OCI pods its image), its
/// GPU devices, its `kumo.dev/port: auto` port.
const START_PREPARATION: [Preparation; 5] = [
    Preparation::TaskData,
    Preparation::ServiceAccountToken,
    Preparation::Sandbox,
    Preparation::GpuDevices,
    Preparation::AppPort,
];

/// One step of [`START_PREPARATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preparation {
    TaskData,
    ServiceAccountToken,
    Sandbox,
    GpuDevices,
    AppPort,
}

/// What a preparation step decided.
enum Prepared {
    /// Go on, with the pod as it will run when the step changed it.
    Ready(Option<Box<Pod>>),
    /// The container cannot start now; the step said why or queued the pod again.
    Wait,
}

impl PodWorker {
    pub fn new(
        client: Client,
        informer: Informer<Pod>,
        queue: WorkQueue<String>,
        runtime: Arc<dyn Runtime>,
        params: SyncParams,
    ) -> Self {
        let recorder = EventRecorder::new(client.clone(), "kumo-agent", Some(&params.node_name));
        PodWorker {
            client,
            informer,
            queue,
            runtime,
            recorder,
            params,
            killing: Arc::default(),
            cleaning: Arc::default(),
            pods: Mutex::default(),
            oci: None,
            prober: None,
            gpus: None,
            task_data: None,
            service_accounts: None,
        }
    }

    /// Lets the worker give pods their service-account tokens (with OCI parts only: the token
    /// directory is in the pod's sandbox).
    pub fn with_service_accounts(
        mut self,
        tokens: Arc<crate::service_account::ServiceAccountTokens>,
    ) -> Self {
        self.service_accounts = Some(tokens);
        self
    }

    /// Lets the worker give MLTask replicas their dataset, output and scratch directories.
    pub fn with_task_data(mut self, data: Arc<crate::task_data::TaskData>) -> Self {
        self.task_data = Some(data);
        self
    }

    /// Lets readiness probe results decide whether containers with a probe are ready.
    pub fn with_prober(mut self, prober: Arc<crate::probe::Prober>) -> Self {
        self.prober = Some(prober);
        self
    }

    /// Lets the worker give containers their own GPU devices.
    pub fn with_gpus(mut self, gpus: Arc<crate::gpu_alloc::GpuAllocator>) -> Self {
        self.gpus = Some(gpus);
        self
    }

    /// Lets the worker run OCI pods: pull their images and make their sandboxes.
    pub fn with_oci(mut self, oci: OciParts) -> Self {
        self.oci = Some(oci);
        self
    }

    /// Changes what the worker remembers of pod `uid`, making its memory when there is none.
    fn remember<R>(&self, uid: &str, f: impl FnOnce(&mut PodMemory) -> R) -> R {
        f(lock(&self.pods).entry(uid.to_string()).or_default())
    }

    /// Reads what the worker remembers of pod `uid`, if anything.
    fn recall<R>(&self, uid: &str, f: impl FnOnce(&PodMemory) -> R) -> Option<R> {
        lock(&self.pods).get(uid).map(f)
    }

    fn set_waiting(&self, uid: &str, container: &str, w: Waiting) {
        self.remember(uid, |p| p.waiting.insert(container.to_string(), w));
    }

    fn clear_waiting(&self, uid: &str, container: &str) {
        if let Some(p) = lock(&self.pods).get_mut(uid) {
            p.waiting.remove(container);
        }
    }

    /// Queues every pod the API or the runtime knows of (start-up and the periodic resync).
    pub fn enqueue_all(&self) {
        for key in self
            .informer
            .filter_map(|p| Some(kumo_client::cache_key(p)))
        {
            self.queue.add(key);
        }
        for rec in self.runtime.pods() {
            self.queue.add(rec.key());
        }
        if let Some(oci) = &self.oci {
            for rec in oci.sandboxes.pods() {
                self.queue.add(rec.key());
            }
        }
    }

    /// How many gone pods are being cleaned up right now.
    pub fn cleanups_in_flight(&self) -> usize {
        self.cleaning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Notes a pod the API deleted, so its containers get its grace period.
    pub fn pod_gone(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .unwrap_or_else(|| pod.spec.grace_period_seconds());
            let grace = Duration::from_secs(grace.max(0) as u64);
            self.remember(uid, |p| p.gone_grace = Some(grace));
        }
    }

    /// Requeues the pod of an exited container, and records a Warning event when it failed.
    /// A container that exited 0 gets none, as in kubelet: its status says so, and a node that
    /// runs short tasks would otherwise write an event per task for nothing.
    pub async fn container_exited(&self, event: RuntimeEvent) {
        let RuntimeEvent::Exited {
            pod,
            container,
            terminated,
            killed,
        } = event;
        self.queue.add(pod.key());
        if killed || terminated.exit_code == 0 {
            return;
        }
        let Some(obj) = self
            .informer
            .get(&pod.key())
            .filter(|p| p.metadata.uid.as_deref() == Some(&pod.uid))
        else {
            return;
        };
        self.record_later(
            &obj,
            EventType::Warning,
            "Failed",
            format!(
                "Container {container} exited with code {}",
                terminated.exit_code
            ),
        );
    }

    /// Records an event without waiting for its write: events are best effort, and the pod's
    /// status write (what clients wait for) should not queue behind them.
    fn record_later(&self, pod: &Pod, type_: EventType, reason: &'static str, message: String) {
        let (recorder, pod) = (self.recorder.clone(), pod.clone());
        tokio::spawn(async move { recorder.record(&pod, type_, reason, message).await });
    }

    /// Syncs one pod. The agent's loop runs it on the controller runtime, which applies the
    /// error policy: a failure, or a panic, is logged (`report`), counted and retried after a
    /// back-off that doubles per consecutive failure (400 ms up to 30 s); the node's other
    /// pods go on being synced meanwhile.
    pub async fn reconcile(&self, key: &str) -> Result<(), SyncError> {
        let pod = self.informer.get(key);
        let current_uid = pod.as_ref().and_then(|p| p.metadata.uid.clone());
        // Containers of pods that are gone from the API (or replaced by a namesake) stop.
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        for rec in self.runtime.pods_named(namespace, name) {
            if Some(&rec.uid) != current_uid.as_ref() {
                self.stop_orphan(&rec).await?;
            }
        }
        // A sandbox whose pod is gone and whose containers are all gone too.
        if let Some(oci) = self.oci.clone() {
            for rec in oci.sandboxes.pods() {
                let cleaning = self
                    .cleaning
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&rec.uid);
                if rec.key() == key
                    && Some(&rec.uid) != current_uid.as_ref()
                    && !self.runtime.has_pod(&rec.uid)
                    && !cleaning
                {
                    tracing::info!(pod = %rec.key(), uid = %rec.uid, "removing the sandbox of a pod gone from the API");
                    oci.sandboxes
                        .teardown(&rec.uid)
                        .await
                        .map_err(kumo_runtime::RuntimeError::Shim)?;
                    self.forget(&rec.uid);
                }
            }
        }
        match pod {
            Some(pod) if current_uid.is_some() => self.sync_pod(&pod).await,
            _ => {
                // A replica gone may be the last trace of a deleted task on this node.
                if let Some(td) = &self.task_data {
                    td.remove_gone_tasks(&self.client).await;
                }
                Ok(())
            }
        }
    }

    async fn stop_orphan(&self, rec: &PodRecord) -> Result<(), SyncError> {
        let state = self.runtime.state(&rec.uid);
        if state.any_running() {
            let grace = self
                .recall(&rec.uid, |p| p.gone_grace)
                .flatten()
                .unwrap_or(ORPHAN_GRACE);
            let stub = Pod {
                metadata: ObjectMeta {
                    name: rec.name.clone(),
                    namespace: Some(rec.namespace.clone()),
                    uid: Some(rec.uid.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            for (name, c) in &state.containers {
                if c.is_running() {
                    self.spawn_kill(&stub, name, grace, false).await;
                }
            }
            return Ok(());
        }
        tracing::info!(pod = %rec.key(), uid = %rec.uid, "removing the state of a pod gone from the API");
        self.cleanup_pod(&rec.uid, &rec.key()).await?;
        Ok(())
    }

    fn forget(&self, uid: &str) {
        lock(&self.pods).remove(uid);
        if let Some(oci) = &self.oci {
            oci.pulls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget_pod(uid);
        }
    }

    /// Removes everything of a pod whose containers all stopped: the runtime's state (bundles,
    /// mounts, cgroups, runtime records), then its sandbox (network, volumes). Both steps run
    /// even when the first fails. It runs off the worker, as a runtime's own cleanup can take
    /// seconds (`runsc delete`) and must not hold up the node's other pods; on failure `key` is
    /// queued again, and until it is done a second cleanup of the same pod is not started.
    async fn cleanup_pod(&self, uid: &str, key: &str) -> Result<(), SyncError> {
        if !self
            .cleaning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.to_string())
        {
            return Ok(());
        }
        self.forget(uid);
        let (runtime, oci, cleaning, queue) = (
            self.runtime.clone(),
            self.oci.clone(),
            self.cleaning.clone(),
            self.queue.clone(),
        );
        let (uid, key) = (uid.to_string(), key.to_string());
        tokio::spawn(async move {
            let runtime_done = runtime.cleanup(&uid).await;
            let sandbox_done = match &oci {
                Some(oci) => oci.sandboxes.teardown(&uid).await,
                None => Ok(()),
            };
            cleaning
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
            if let Err(e) = runtime_done.map_err(|e| e.to_string()).and(sandbox_done) {
                tracing::warn!(pod = %key, %uid, error = %e, "pod cleanup failed; retrying");
                queue.add_after(key, Duration::from_secs(1));
            }
        });
        Ok(())
    }

    async fn spawn_kill(&self, pod: &Pod, container: &str, grace: Duration, announce: bool) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let entry = (uid.clone(), container.to_string());
        if !self
            .killing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(entry.clone())
        {
            return;
        }
        if announce {
            self.recorder
                .record(
                    pod,
                    EventType::Normal,
                    "Killing",
                    format!("Stopping container {container}"),
                )
                .await;
        }
        let (runtime, killing, queue) = (
            self.runtime.clone(),
            self.killing.clone(),
            self.queue.clone(),
        );
        let key = kumo_client::cache_key(pod);
        let container = container.to_string();
        tokio::spawn(async move {
            if let Err(e) = runtime.kill(&uid, &container, grace).await {
                tracing::warn!(pod = %key, container, error = %e, "cannot stop container");
            }
            killing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&entry);
            queue.add(key);
        });
    }

    async fn sync_pod(&self, pod: &Pod) -> Result<(), SyncError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        // Remember the pod's grace period now: when it vanishes from the API, the informer's
        // cache may say so before its Deleted change arrives, and its containers must still get
        // the pod's own grace period rather than the orphan default.
        self.remember(&uid, |p| {
            p.gone_grace.get_or_insert_with(|| {
                Duration::from_secs(pod.spec.grace_period_seconds().max(0) as u64)
            });
        });
        let key = kumo_client::cache_key(pod);
        let now = chrono::Utc::now();
        let actual = self.runtime.state(&uid);
        for action in plan(pod, &actual, now, &self.params) {
            match action {
                Action::Start { container } => self.start(pod, container).await?,
                Action::Kill { container, grace } => {
                    if let Some(c) = pod.spec.containers.get(container) {
                        self.spawn_kill(pod, &c.name, grace, true).await;
                    }
                }
                // Handled below, from the state after this round's starts.
                Action::WaitBackoff { .. } => {}
                Action::FinalizeDeletion => return self.finalize(pod).await,
            }
        }
        let actual = self.runtime.state(&uid);
        let now = chrono::Utc::now();
        for action in plan(pod, &actual, now, &self.params) {
            match action {
                Action::WaitBackoff { container, until } => {
                    let delay = (until - now).to_std().unwrap_or_default();
                    self.queue.add_after(key.clone(), delay);
                    let Some(c) = pod.spec.containers.get(container) else {
                        continue;
                    };
                    let restarts = actual
                        .containers
                        .get(&c.name)
                        .map_or(0, |s| s.restart_count);
                    let first = self.remember(&uid, |p| {
                        p.backoff_announced.insert((c.name.clone(), restarts))
                    });
                    if first {
                        self.recorder
                            .record(
                                pod,
                                EventType::Warning,
                                "BackOff",
                                format!("Back-off restarting failed container {}", c.name),
                            )
                            .await;
                    }
                }
                // A container waiting for its image, sandbox or config is requeued by that.
                Action::Start { container } => {
                    let name = pod.spec.containers.get(container).map(|c| c.name.as_str());
                    let waits = name.is_some_and(|n| {
                        self.recall(&uid, |p| p.waiting.contains_key(n)) == Some(true)
                    });
                    if !waits {
                        self.queue.add(key.clone());
                    }
                }
                Action::Kill { .. } | Action::FinalizeDeletion => {}
            }
        }
        self.collect_output(pod, &actual).await;
        self.refresh_token(pod, &actual).await;
        self.write_status(pod, now).await
    }

    /// Uploads an MLTask replica's output once its containers have ended, before the status
    /// that says so is written: a task is Succeeded only after its outputs are on the server.
    /// A failed upload is reported as an event and not retried (it must not hold the status).
    async fn collect_output(&self, pod: &Pod, actual: &crate::model::PodRuntimeState) {
        let Some(td) = self.task_data.clone() else {
            return;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let ended = !actual.is_empty()
            && !actual.any_running()
            && pod
                .spec
                .containers
                .iter()
                .all(|c| actual.containers.contains_key(&c.name));
        if !ended
            || !pod
                .metadata
                .annotations
                .contains_key(kumo_api::dataset::ANNOTATION_OUTPUT)
            || self.remember(&uid, |p| std::mem::replace(&mut p.collected, true))
        {
            return;
        }
        if let Err(message) = td.collect_output(&self.client, pod).await {
            tracing::warn!(pod = %kumo_client::cache_key(pod), %message, "collecting output failed");
            self.recorder
                .record(
                    pod,
                    EventType::Warning,
                    "OutputCollectionFailed",
                    format!("Collecting /output failed: {message}"),
                )
                .await;
        }
    }

    async fn start(&self, pod: &Pod, index: usize) -> Result<(), SyncError> {
        let name = pod
            .spec
            .containers
            .get(index)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        // The pod as it will run: each step may add to it (directories, devices, a port).
        let mut run = std::borrow::Cow::Borrowed(pod);
        for step in START_PREPARATION {
            match self.prepare(step, &run, index, &name).await? {
                Prepared::Ready(None) => {}
                Prepared::Ready(Some(changed)) => run = std::borrow::Cow::Owned(*changed),
                Prepared::Wait => return Ok(()),
            }
        }
        let pod = &*run;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let outcome = self.runtime.start(pod, index).await?;
        if let StartOutcome::ConfigError(message) = &outcome {
            self.config_error(pod, &name, message.clone()).await;
            return Ok(());
        }
        self.clear_waiting(&uid, &name);
        match outcome {
            StartOutcome::ConfigError(_) => {}
            StartOutcome::Started { pid } => {
                tracing::info!(pod = %kumo_client::cache_key(pod), container = %name, pid, "started container");
                self.record_later(
                    pod,
                    EventType::Normal,
                    "Started",
                    format!("Started container {name}"),
                );
            }
            StartOutcome::Failed(message) => {
                tracing::info!(pod = %kumo_client::cache_key(pod), container = %name, %message, "container failed to start");
                self.recorder
                    .record(
                        pod,
                        EventType::Warning,
                        "Failed",
                        format!("Error: {message}"),
                    )
                    .await;
            }
        }
        Ok(())
    }

    /// One step of a container's preparation (see [`START_PREPARATION`]). A step that stops the
    /// start has said why the container waits, or queued the pod again.
    async fn prepare(
        &self,
        step: Preparation,
        pod: &Pod,
        index: usize,
        name: &str,
    ) -> Result<Prepared, SyncError> {
        match step {
            Preparation::TaskData => {
                let Some(td) = self.task_data.clone() else {
                    return Ok(Prepared::Ready(None));
                };
                if !crate::task_data::wants_dirs(pod) {
                    return Ok(Prepared::Ready(None));
                }
                match td.prepare(&self.client, pod).await {
                    Ok(dirs) => Ok(Prepared::Ready(Some(Box::new(
                        crate::task_data::with_dirs(pod, &dirs),
                    )))),
                    Err(message) => {
                        self.config_error(pod, name, message).await;
                        // A dataset pushed meanwhile is found on the next try.
                        self.queue
                            .add_after(kumo_client::cache_key(pod), Duration::from_secs(2));
                        Ok(Prepared::Wait)
                    }
                }
            }
            Preparation::ServiceAccountToken => self.prepare_token(pod, name).await,
            Preparation::Sandbox => {
                let ready = if is_process_pod(pod) {
                    pod.spec.volumes.is_empty() || self.sandbox_ready(pod, index).await
                } else {
                    self.oci_ready(pod, index).await
                };
                Ok(if ready {
                    Prepared::Ready(None)
                } else {
                    Prepared::Wait
                })
            }
            Preparation::GpuDevices => {
                let Some(gpus) = self.gpus.clone() else {
                    return Ok(Prepared::Ready(None));
                };
                if !crate::gpu_alloc::wants_gpus(pod) {
                    return Ok(Prepared::Ready(None));
                }
                let runtime = self.runtime.clone();
                // Ended pods hold no device unless their containers still run; leaving the
                // others out spares a clone of every ended pod on the node per container start.
                let pods = self.informer.list_filtered(|p| {
                    !p.status.as_ref().is_some_and(|s| s.phase.is_terminal())
                        || runtime
                            .state(p.metadata.uid.as_deref().unwrap_or_default())
                            .any_running()
                });
                let active = |uid: &str| {
                    let ended = pods.iter().any(|p| {
                        p.metadata.uid.as_deref() == Some(uid)
                            && p.status.as_ref().is_some_and(|s| s.phase.is_terminal())
                    });
                    let known = pods.iter().any(|p| p.metadata.uid.as_deref() == Some(uid));
                    (known && !ended) || runtime.state(uid).any_running()
                };
                match gpus.prepare(&self.client, pod, &pods, &active).await {
                    Ok(p) => Ok(Prepared::Ready(Some(Box::new(p)))),
                    Err(message) => {
                        self.config_error(pod, name, message).await;
                        // Devices free up as soon as their pods' statuses say they ended: look
                        // again soon rather than after a whole back-off.
                        self.queue
                            .add_after(kumo_client::cache_key(pod), Duration::from_secs(1));
                        Ok(Prepared::Wait)
                    }
                }
            }
            Preparation::AppPort => Ok(Prepared::Ready(Some(Box::new(
                crate::app_port::ensure(&self.client, pod).await?,
            )))),
        }
    }

    /// The pod's token directory, made and filled when it has no token yet, and the pod as it
    /// runs with it (and with the API server's address, token or not). A token that cannot be
    /// had keeps the container waiting with `CreateContainerConfigError` and the reason, tried
    /// again after the back-off base.
    async fn prepare_token(&self, pod: &Pod, name: &str) -> Result<Prepared, SyncError> {
        use crate::service_account::{has_token, wants_token, with_token_dir};
        let (Some(tokens), Some(oci)) = (self.service_accounts.clone(), self.oci.clone()) else {
            return Ok(Prepared::Ready(None));
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        // A sandbox made before this agent gave tokens has no volume for one, and its volumes
        // are fixed: its pod's containers go on without (a new pod gets one).
        let predates = oci.sandboxes.get(&uid).is_some_and(|s| {
            !is_process_pod(pod) && !s.volumes.contains_key(crate::service_account::VOLUME)
        });
        if !wants_token(pod) || predates {
            return Ok(Prepared::Ready(Some(Box::new(with_token_dir(
                pod,
                None,
                tokens.server(),
            )))));
        }
        let dir = match oci.sandboxes.make_token_dir(pod) {
            Ok(dir) => dir,
            Err(e) => {
                self.config_error(pod, name, e.to_string()).await;
                return Ok(Prepared::Wait);
            }
        };
        let known = self.recall(&uid, |p| p.token_refresh.is_some()) == Some(true);
        if !known || !has_token(&dir) {
            match tokens.issue(pod, &dir).await {
                Ok(refresh) => self.token_issued(pod, refresh),
                Err(message) => {
                    self.config_error(pod, name, message).await;
                    return Ok(Prepared::Wait);
                }
            }
        }
        Ok(Prepared::Ready(Some(Box::new(with_token_dir(
            pod,
            Some(&dir),
            tokens.server(),
        )))))
    }

    /// Remembers when the pod's new token is due to be replaced, and syncs the pod then.
    fn token_issued(&self, pod: &Pod, refresh: Duration) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let at = std::time::Instant::now() + refresh;
        self.remember(&uid, |p| p.token_refresh = Some(at));
        self.queue.add_after(
            kumo_client::cache_key(pod),
            refresh + Duration::from_millis(50),
        );
    }

    /// Replaces a running pod's token once it is due (and, after an agent restart, at once: the
    /// token's age is not known). A failure is retried after the back-off base; the old token
    /// stays until it expires.
    async fn refresh_token(&self, pod: &Pod, actual: &crate::model::PodRuntimeState) {
        let (Some(tokens), Some(oci)) = (self.service_accounts.clone(), self.oci.clone()) else {
            return;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let Some(dir) = oci.sandboxes.token_dir(&uid) else {
            return;
        };
        if !crate::service_account::wants_token(pod)
            || !actual.any_running()
            || !crate::service_account::has_token(&dir)
        {
            return;
        }
        let due = self
            .recall(&uid, |p| p.token_refresh)
            .flatten()
            .is_none_or(|at| at <= std::time::Instant::now());
        if !due {
            return;
        }
        match tokens.issue(pod, &dir).await {
            Ok(refresh) => {
                tracing::debug!(pod = %kumo_client::cache_key(pod), "service-account token replaced");
                self.token_issued(pod, refresh);
            }
            Err(message) => {
                tracing::warn!(pod = %kumo_client::cache_key(pod), %message, "cannot replace the service-account token");
                self.record_later(
                    pod,
                    EventType::Warning,
                    "FailedRefreshServiceAccountToken",
                    message,
                );
                self.token_issued(pod, self.params.backoff_base);
            }
        }
    }

    /// A container's configuration is refused: it waits with `CreateContainerConfigError`
    /// and is tried again after the back-off base.
    async fn config_error(&self, pod: &Pod, container: &str, message: String) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let w = Waiting {
            reason: REASON_CONFIG_ERROR.to_string(),
            message: Some(message.clone()),
        };
        let changed = self
            .recall(&uid, |p| p.waiting.get(container) != Some(&w))
            .unwrap_or(true);
        if changed {
            self.recorder
                .record(
                    pod,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                )
                .await;
        }
        self.set_waiting(&uid, container, w);
        self.queue
            .add_after(kumo_client::cache_key(pod), self.params.backoff_base);
    }

    /// Whether container `index` of an OCI pod can start now: its image is here (else a pull
    /// starts or is waited for) and the pod's sandbox is made. Otherwise the container's
    /// waiting reason is recorded and the pod requeued.
    async fn oci_ready(&self, pod: &Pod, index: usize) -> bool {
        let Some(oci) = self.oci.clone() else {
            return true;
        };
        let Some(c) = pod.spec.containers.get(index) else {
            return false;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = kumo_client::cache_key(pod);
        let image = c.image.clone().unwrap_or_default();
        let present = oci.images.has_image(&image).await;
        let step = {
            let mut table = oci.pulls.lock().unwrap_or_else(|e| e.into_inner());
            let step = decide(
                &table,
                &uid,
                &image,
                c.pull_policy(),
                present,
                chrono::Utc::now(),
                self.params.backoff_base,
            );
            if let PullStep::Wait { waiting, retry_in } = &step {
                if waiting.reason == REASON_ERR_IMAGE_PULL {
                    if let Some(f) = table.failed.get_mut(&(uid.clone(), image.clone())) {
                        f.reported = true;
                    }
                }
                // Waiting for another pod's pull of the image: told when it ends.
                if retry_in.is_none() && table.in_flight.contains(&image) {
                    table.wait_for(&image, &key);
                }
            }
            if let PullStep::Pull { .. } = &step {
                table.in_flight.insert(image.clone());
            }
            step
        };
        match step {
            PullStep::Ready => {}
            PullStep::Pull { waiting } => {
                self.set_waiting(&uid, &c.name, waiting);
                self.recorder
                    .record(
                        pod,
                        EventType::Normal,
                        "Pulling",
                        format!("Pulling image {image:?}"),
                    )
                    .await;
                let (images, pulls, queue, recorder, obj) = (
                    oci.images.clone(),
                    oci.pulls.clone(),
                    self.queue.clone(),
                    self.recorder.clone(),
                    pod.clone(),
                );
                let uid2 = uid.clone();
                let auth =
                    crate::pull_secrets::auth_for(&self.client, pod, &image, &self.recorder).await;
                tokio::spawn(async move {
                    let result = images.pull(&image, &auth).await;
                    let event = match &result {
                        Ok(()) => (
                            EventType::Normal,
                            "Pulled",
                            format!("Successfully pulled image {image:?}"),
                        ),
                        Err(e) => (
                            EventType::Warning,
                            "Failed",
                            format!("Failed to pull image {image:?}: {e}"),
                        ),
                    };
                    let waiters = pulls.lock().unwrap_or_else(|e| e.into_inner()).finish(
                        &uid2,
                        &image,
                        result,
                        chrono::Utc::now(),
                    );
                    recorder.record(&obj, event.0, event.1, event.2).await;
                    queue.add(key);
                    for waiter in waiters {
                        queue.add(waiter);
                    }
                });
                return false;
            }
            PullStep::Wait { waiting, retry_in } => {
                self.set_waiting(&uid, &c.name, waiting);
                if let Some(d) = retry_in {
                    self.queue.add_after(key, d);
                }
                return false;
            }
        }
        self.sandbox_ready(pod, index).await
    }

    /// Makes the pod's sandbox (its network, for OCI pods, and its volumes); false while it
    /// cannot be made, with the container's waiting reason set.
    async fn sandbox_ready(&self, pod: &Pod, index: usize) -> bool {
        let Some(oci) = self.oci.clone() else {
            return true;
        };
        let Some(c) = pod.spec.containers.get(index) else {
            return false;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = kumo_client::cache_key(pod);
        match oci.sandboxes.ensure(pod).await {
            Ok(_) => true,
            Err(SandboxError::Config(message)) => {
                self.config_error(pod, &c.name, message).await;
                false
            }
            Err(SandboxError::Failed(message)) => {
                let message = format!("failed to create pod sandbox: {message}");
                self.recorder
                    .record(
                        pod,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        message.clone(),
                    )
                    .await;
                self.set_waiting(
                    &uid,
                    &c.name,
                    Waiting {
                        reason: crate::status::REASON_CREATING.to_string(),
                        message: Some(message),
                    },
                );
                self.queue.add_after(key, self.params.backoff_base);
                false
            }
        }
    }

    /// The runtime's state of a pod plus what the worker knows: waiting reasons and the pod IP.
    fn observed(&self, uid: &str) -> crate::model::PodRuntimeState {
        let mut actual = self.runtime.state(uid);
        actual.waiting = self.recall(uid, |p| p.waiting.clone()).unwrap_or_default();
        actual.pod_ip = self
            .oci
            .as_ref()
            .and_then(|o| o.sandboxes.get(uid))
            .and_then(|s| s.ip)
            .map(|ip| ip.to_string());
        actual
    }

    /// Writes the status the pod should have, if it differs, on the freshest object.
    async fn write_status(&self, pod: &Pod, now: kumo_api::Time) -> Result<(), SyncError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut actual = self.observed(&uid);
        if let Some(prober) = &self.prober {
            actual.probes_passed = prober.passed(pod, &actual);
        }
        // The informer's copy holds this worker's last status write (`Informer::assume`), so a
        // write starts from the latest revision instead of being refused as a conflict.
        let mut current = match self.informer.get(&kumo_client::cache_key(pod)) {
            Some(c)
                if c.metadata.uid == pod.metadata.uid
                    && c.metadata.revision() > pod.metadata.revision() =>
            {
                c
            }
            _ => pod.clone(),
        };
        for _ in 0..5 {
            let status = pod_status(&current, &actual, now, &self.params);
            if current.status.as_ref() == Some(&status) {
                return Ok(());
            }
            let mut obj = current.clone();
            obj.status = Some(status);
            match self.client.update_status(&obj).await {
                Ok(written) => {
                    self.informer.assume(written);
                    return Ok(());
                }
                Err(e) if e.is_conflict() => {
                    match self
                        .client
                        .get_opt::<Pod>(pod.metadata.ns(), &pod.metadata.name)
                        .await?
                    {
                        Some(fresh) if fresh.metadata.uid == pod.metadata.uid => current = fresh,
                        _ => return Ok(()),
                    }
                }
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClientError::Request("pod status update kept conflicting".into()).into())
    }

    /// All containers stopped: final status, remove the pod from the API, then its local state.
    async fn finalize(&self, pod: &Pod) -> Result<(), SyncError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.write_status(pod, chrono::Utc::now()).await?;
        match self
            .client
            .delete::<Pod>(pod.metadata.ns(), &pod.metadata.name, Some(0))
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        self.cleanup_pod(&uid, &kumo_client::cache_key(pod)).await?;
        tracing::info!(pod = %kumo_client::cache_key(pod), "pod deleted");
        Ok(())
    }
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
