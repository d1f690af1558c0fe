//! The MLTask controller loop: informers on tasks, queues, nodes and pods wake one `pass` per
//! batch of changes (or when a back-off or deadline ends), on the client's pass-shaped
//! controller runtime; its actions are written to the API.
//!
//! Each write's answer is assumed into its informer (`Informer::assume`, as the scheduler
//! assumes its bindings), so the next pass neither admits a task twice nor forgets a pod it just
//! created, and the write's own watch event wakes no pass.

use super::pass::{pass, task_key, Action, Snapshot};
use super::settled::{self, finished_entry, pod_needed_with, tasks_of_holding, Finished};
use super::standing;
use futures_util::StreamExt;
use kumo_api::Time;
use kumo_api::{MLTask, Node, Pod, Queue};
use kumo_client::{
    Backoff, Client, EventRecorder, EventType, Failure, Informer, ListParams, Pass, Passed, Retry,
};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of the MLTask controller.
#[derive(Debug, Clone)]
pub struct MLTaskConfig {
    /// Back-off before the second attempt after a gang failure (doubles per attempt).
    pub backoff_base: Duration,
}

impl Default for MLTaskConfig {
    fn default() -> Self {
        MLTaskConfig {
            backoff_base: Duration::from_secs(10),
        }
    }
}

/// Passes cheaper than this run as soon as something changes.
const MIN_BATCH_WAIT: Duration = Duration::from_millis(1);
/// The longest a change waits for the next pass beyond the pass it is waiting behind.
const MAX_BATCH_WAIT: Duration = Duration::from_millis(10);
/// How many tasks' writes are in flight at once.
const WRITE_CONCURRENCY: usize = 16;
/// First retry of a pass (or of a task's step) that panicked; doubles per consecutive panic.
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The complete datasets' names, asked only when a queued task names one (datasets live beside
/// the store, not in it, so there is no informer for them); `None` when the server cannot say.
async fn dataset_names(client: &Client, tasks: &[Arc<MLTask>]) -> Option<BTreeSet<String>> {
    let wanted = tasks.iter().any(|t| {
        t.spec.data.as_ref().is_some_and(|d| d.dataset.is_some())
            && t.status
                .as_ref()
                .is_none_or(|s| s.phase == kumo_api::mltask::TaskPhase::Queued)
    });
    if !wanted {
        return Some(BTreeSet::new());
    }
    match kumo_client::data::list_datasets(client).await {
        Ok(items) => Some(items.into_iter().map(|d| d.name).collect()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list datasets");
            None
        }
    }
}

/// Runs the MLTask controller until `shutdown`.
pub async fn run(client: Client, config: MLTaskConfig, shutdown: impl Future<Output = ()> + Send) {
    let (tasks, task_changes) =
        Informer::<MLTask>::start(client.clone(), None, ListParams::default());
    let (queues, queue_changes) =
        Informer::<Queue>::start(client.clone(), None, ListParams::default());
    let (nodes, node_changes) =
        Informer::<Node>::start(client.clone(), None, ListParams::default());
    let (pods, pod_changes) = Informer::<Pod>::start(client.clone(), None, ListParams::default());
    let recorder = EventRecorder::new(client.clone(), "kumo-mltask-controller", None);
    // The controller's own writes are assumed into the informers as they are answered
    // (`Informer::assume`): a pass sees them at once, and their watch events wake nothing.
    //
    // A pass over a long queue costs milliseconds. The next one starts no sooner than as long
    // again after this one ended (at most MAX_BATCH_WAIT): changes that arrive meanwhile join
    // it, and with many tasks the controller takes about half a CPU at most. A change that
    // comes later is taken at once; a short queue is not held back.
    let runtime = Pass::new(RETRY_BASE, RETRY_MAX)
        .watches(&tasks, task_changes)
        .watches(&queues, queue_changes)
        .watches(&nodes, node_changes)
        .watches(&pods, pod_changes)
        .cooldown(MIN_BATCH_WAIT, MAX_BATCH_WAIT);
    let state = State {
        refused: Mutex::new(BTreeSet::new()),
        written: Mutex::new(BTreeMap::new()),
        backoff: Backoff::new(RETRY_BASE, RETRY_MAX),
    };
    let ctx = Ctx {
        client: &client,
        recorder: &recorder,
        tasks: &tasks,
        queues: &queues,
        nodes: &nodes,
        pods: &pods,
        config: &config,
        state: &state,
    };
    let report = |_: &(), failure: &Failure<Infallible>, retry: &Retry| {
        // Nothing of this pass is written; it is tried again after a back-off.
        tracing::error!(error = %failure, retry_in = ?retry.delay, failures = retry.total, "mltask pass panicked");
    };
    runtime.run(move || one_pass(ctx), report, shutdown).await
}

/// What passes remember.
struct State {
    /// Pod creations the API refused, reported once each.
    refused: Mutex<BTreeSet<String>>,
    /// When each task's status was last written (for the throttle of standing-only changes).
    written: Mutex<BTreeMap<String, Time>>,
    /// Panics of single tasks' steps inside a pass, by task key.
    backoff: Backoff<String>,
}

/// What a pass reads and writes through.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    client: &'a Client,
    recorder: &'a EventRecorder,
    tasks: &'a Informer<MLTask>,
    queues: &'a Informer<Queue>,
    nodes: &'a Informer<Node>,
    pods: &'a Informer<Pod>,
    config: &'a MLTaskConfig,
    state: &'a State,
}

/// One pass: a snapshot of the caches, `pass` over it, its writes; says when to pass again.
async fn one_pass(ctx: Ctx<'_>) -> Result<Passed, Infallible> {
    let Ctx {
        client,
        recorder,
        tasks,
        queues,
        nodes,
        pods,
        config,
        state,
    } = ctx;
    let started = Instant::now();
    // Ended tasks whose replicas hold nothing, and those replicas, are left out: they are
    // most of a busy cluster's objects and a pass has nothing to do with them.
    let finished: Finished = tasks.filter_map(finished_entry).into_iter().collect();
    // Tasks are shared with the informer's cache, not copied: most wait unchanged.
    let mut task_list = tasks.list_filtered_shared(|t| !settled::finished(t));
    let any_task = !task_list.is_empty();
    let pod_list = pods.list_filtered(|p| pod_needed_with(p, &finished, any_task));
    for key in tasks_of_holding(&pod_list, &finished) {
        if !task_list.iter().any(|t| task_key(t) == key) {
            task_list.extend(tasks.get_shared(&key));
        }
    }
    // Nodes count only in tasks' steps and admission: a pass with no task copies none (with a
    // thousand nodes, each heartbeat made a pass that cloned every Node: bench/density.py).
    let node_list = if task_list.is_empty() {
        Vec::new()
    } else {
        nodes.list()
    };
    let queue_list = queues.list();
    let datasets = dataset_names(client, &task_list).await;
    let now = chrono::Utc::now();
    // A panic here is caught by the runtime, which retries the pass after a back-off (not at
    // the next change, which would spin on a pass that always panics).
    let outcome = {
        let written = state.written.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = Snapshot {
            tasks: &task_list,
            queues: &queue_list,
            nodes: &node_list,
            pods: &pod_list,
            datasets: datasets.as_ref(),
            standing_written: &written,
        };
        pass(&snapshot, now, config.backoff_base)
    };
    // Tasks whose own step panicked: the pass decided for the others; these are looked at
    // again after their back-off.
    let backoff = &state.backoff;
    let mut retry_failed: Option<Duration> = None;
    let failed_now: BTreeSet<&String> = outcome.failed.iter().map(|(k, _)| k).collect();
    for (key, why) in &outcome.failed {
        let retry = backoff.failed(key);
        tracing::error!(task = %key, error = %why, retry_in = ?retry.delay, failures = retry.total, "mltask step panicked");
        retry_failed = Some(retry_failed.map_or(retry.delay, |d| d.min(retry.delay)));
    }
    for t in &task_list {
        let key = task_key(t);
        if !failed_now.contains(&key) {
            backoff.succeeded(&key);
        }
    }
    let pass_cost = started.elapsed();
    tracing::debug!(
        tasks = task_list.len(),
        pods = pod_list.len(),
        actions = outcome.actions.len(),
        us = started.elapsed().as_micros() as u64,
        "mltask pass"
    );
    // Statuses first: a task whose status did not take gets no event and no pod this pass
    // (the next pass decides again from what the API holds).
    let (statuses, rest): (Vec<Action>, Vec<Action>) = outcome
        .actions
        .into_iter()
        .partition(|a| matches!(a, Action::Status(_)));
    // Each task's writes, in order; tasks are written concurrently (the store commits writes
    // that arrive together in one transaction).
    let mut groups: BTreeMap<String, Vec<Action>> = BTreeMap::new();
    {
        let mut written = state.written.lock().unwrap_or_else(|e| e.into_inner());
        // An older write holds nothing back any more.
        written.retain(|_, at| {
            (now - *at)
                .to_std()
                .is_ok_and(|age| age < standing::LONGEST_INTERVAL)
        });
        for (i, action) in statuses.into_iter().chain(rest).enumerate() {
            if let Action::Status(t) = &action {
                written.insert(task_key(t), now);
            }
            let owner = match &action {
                Action::Status(t) | Action::Event { task: t, .. } => Some(task_key(t)),
                Action::CreatePod(p) => p
                    .metadata
                    .labels
                    .get(kumo_api::keys::LABEL_TASK)
                    .map(|t| format!("{}/{t}", p.metadata.ns())),
                _ => None,
            };
            // Writes of no task (deletions, queue statuses) each go on their own.
            let group = owner.unwrap_or_else(|| format!("\u{0}{i}"));
            groups.entry(group).or_default().push(action);
        }
    }
    // Whether a task's status write failed (then the next pass comes soon).
    let failed: Vec<bool> = futures_util::stream::iter(groups.into_values().map(|actions| {
        let refused = &state.refused;
        let informers = (tasks, pods);
        async move {
            for action in actions {
                // A task whose status did not take gets no event and no pod this pass (the
                // next pass decides again from what the API holds).
                let is_status = matches!(action, Action::Status(_));
                if let Err(e) = execute(client, recorder, informers, action, refused).await {
                    tracing::debug!(error = %e, "mltask write failed; the next pass retries");
                    return is_status;
                }
            }
            false
        }
    }))
    .buffer_unordered(WRITE_CONCURRENCY)
    .collect()
    .await;
    let retry_soon = failed.contains(&true);
    let mut wait = outcome
        .next_at
        .map(|t| (t - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
        .unwrap_or(Duration::from_secs(30));
    if retry_soon {
        wait = wait.min(Duration::from_millis(500));
    }
    if let Some(retry) = retry_failed {
        wait = wait.min(retry);
    }
    Ok(Passed {
        requeue_after: Some(wait),
        cost: pass_cost,
        // Tasks whose step panicked have their own back-off (above), one per task.
        left_out: Vec::new(),
    })
}

/// Carries out one write; what the API answered is assumed into the informers.
async fn execute(
    client: &Client,
    recorder: &EventRecorder,
    (tasks, pods): (&Informer<MLTask>, &Informer<Pod>),
    action: Action,
    refused: &std::sync::Mutex<BTreeSet<String>>,
) -> Result<(), kumo_client::ClientError> {
    match action {
        Action::Status(task) => match client.update_status(task.as_ref()).await {
            Ok(written) => tasks.assume(written),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        },
        Action::CreatePod(pod) => match client.create(pod.as_ref()).await {
            Ok(created) => {
                pods.assume(created);
                if let Some(key) = owner_key(&pod) {
                    crate::replica_failure::mark(client, tasks, &key, None).await;
                }
            }
            // Created by an earlier pass the informer has not shown yet.
            Err(e) if e.code() == Some(409) => {}
            // Refused (the API's rules changed, a namespace is going away): say so on the task.
            Err(e) if e.code().is_some_and(|c| (400..500).contains(&c)) => {
                let message = format!("cannot create replica pod {}: {e}", pod.metadata.name);
                if crate::replica_failure::is_refusal(&e) {
                    if let Some(key) = owner_key(&pod) {
                        crate::replica_failure::mark(client, tasks, &key, Some(&message)).await;
                    }
                }
                let first = refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(message.clone());
                if first {
                    if let Some(owner) = pod.metadata.owner_references.first() {
                        let mut task = MLTask::default();
                        task.metadata.name = owner.name.clone();
                        task.metadata.namespace = pod.metadata.namespace.clone();
                        task.metadata.uid = Some(owner.uid.clone());
                        recorder
                            .record(&task, EventType::Warning, "FailedCreate", message)
                            .await;
                    }
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        },
        Action::DeletePod {
            namespace,
            name,
            grace_seconds,
        } => match client
            .delete::<Pod>(&namespace, &name, Some(grace_seconds))
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        },
        Action::Event {
            task,
            warning,
            reason,
            message,
        } => {
            let type_ = if warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            tracing::info!(task = %task_key(&task), reason, %message, "mltask");
            // Off the pass: the next pass (which admits the next task) waits for this pass's
            // writes, and an event is history, not state (best effort, as in Kubernetes). It
            // is still only sent once the task's status before it took.
            let recorder = recorder.clone();
            tokio::spawn(async move {
                recorder.record(task.as_ref(), type_, reason, message).await;
            });
        }
        Action::QueueStatus(queue) => match client.update_status(queue.as_ref()).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e),
        },
    }
    Ok(())
}

/// The key of the task that owns replica `pod`, for its `ReplicaFailure` condition.
fn owner_key(pod: &Pod) -> Option<String> {
    let owner = pod.metadata.owner_references.first()?;
    Some(format!("{}/{}", pod.metadata.ns(), owner.name))
}
