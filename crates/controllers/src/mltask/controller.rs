//! The MLTask controller loop: informers on tasks, queues, nodes and pods wake one `pass` per
//! batch of changes (or when a back-off or deadline ends); its actions are written to the API.
//!
//! Writes the informers have not shown yet are remembered ("assumed", as the scheduler does), so
//! the next pass neither admits a task twice nor forgets a pod it just created.

use super::pass::{pass, task_key, Action, Snapshot};
use super::settled::{self, finished_entry, pod_needed, tasks_of_holding, Finished};
use super::standing;
use futures_util::StreamExt;
use kumo_api::Time;
use kumo_api::{MLTask, Node, Pod, Queue, Resource};
use kumo_client::{cache_key, Change, Client, EventRecorder, EventType, Informer, ListParams};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

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

/// How long a written object is preferred over an informer that has not caught up.
const ASSUME_FOR: Duration = Duration::from_secs(10);
/// Passes cheaper than this run as soon as something changes.
const MIN_BATCH_WAIT: Duration = Duration::from_millis(1);
/// The longest a change waits for the next pass beyond the pass it is waiting behind.
const MAX_BATCH_WAIT: Duration = Duration::from_millis(10);
/// How many tasks' writes are in flight at once.
const WRITE_CONCURRENCY: usize = 16;

/// Objects this controller wrote, until the informer shows them.
struct Assumed<K> {
    objects: BTreeMap<String, (Arc<K>, Instant)>,
}

impl<K: Resource> Assumed<K> {
    fn new() -> Self {
        Assumed {
            objects: BTreeMap::new(),
        }
    }

    fn remember(&mut self, obj: K) {
        self.objects
            .insert(cache_key(&obj), (Arc::new(obj), Instant::now()));
    }

    /// The informer's objects (in its key order, `cache_key`), with newer written versions in
    /// place of older ones, and (with `add`) created objects the informer does not have yet.
    /// Written objects are few: each is found by binary search, the rest are left as they are.
    fn overlay(&mut self, mut cached: Vec<Arc<K>>, add: bool) -> Vec<Arc<K>> {
        let find = |cached: &[Arc<K>], key: &str| {
            cached.binary_search_by(|o| cache_key(o.as_ref()).as_str().cmp(key))
        };
        self.objects.retain(|key, (obj, at)| {
            let seen = find(&cached, key)
                .is_ok_and(|i| cached[i].meta().revision() >= obj.meta().revision());
            !seen && at.elapsed() < ASSUME_FOR
        });
        for (key, (obj, _)) in &self.objects {
            match find(&cached, key) {
                Ok(i) => cached[i] = obj.clone(),
                Err(i) if add => cached.insert(i, obj.clone()),
                Err(_) => {}
            }
        }
        cached
    }
}

/// This controller's own writes, by kind, key and revision, until their watch events arrive:
/// such an event shows what the pass already assumed (see `Assumed`), so it wakes no pass. A
/// batch of writes would otherwise wake a pass that finds nothing to do.
#[derive(Default)]
struct Echoes {
    expected: std::sync::Mutex<HashMap<(&'static str, String, u64), Instant>>,
}

impl Echoes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, String, u64), Instant>> {
        self.expected.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a write whose event is still to come.
    fn expect<K: Resource>(&self, obj: &K) {
        let key = (K::KIND, cache_key(obj), obj.meta().revision());
        self.lock().insert(key, Instant::now());
    }

    /// Whether `change` is the event of a remembered write (then forgotten).
    fn is_echo<K: Resource>(&self, change: &Change<K>) -> bool {
        let Change::Applied(obj) = change else {
            return false;
        };
        let key = (K::KIND, cache_key(obj), obj.meta().revision());
        self.lock().remove(&key).is_some()
    }

    /// Forgets writes whose event came before the write's answer (it woke a pass then).
    fn prune(&self) {
        self.lock().retain(|_, at| at.elapsed() < ASSUME_FOR);
    }
}

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
    let wake = Arc::new(Notify::new());
    let echoes = Arc::new(Echoes::default());
    let (tasks, mut task_changes) =
        Informer::<MLTask>::start(client.clone(), None, ListParams::default());
    let (queues, mut queue_changes) =
        Informer::<Queue>::start(client.clone(), None, ListParams::default());
    let (nodes, mut node_changes) =
        Informer::<Node>::start(client.clone(), None, ListParams::default());
    let (pods, mut pod_changes) =
        Informer::<Pod>::start(client.clone(), None, ListParams::default());
    let recorder = EventRecorder::new(client.clone(), "kumo-mltask-controller", None);
    let forward = {
        let (wake, echoes) = (wake.clone(), echoes.clone());
        async move {
            loop {
                let echo = tokio::select! {
                    c = task_changes.recv() => match c { Some(c) => echoes.is_echo(&c), None => break },
                    c = queue_changes.recv() => if c.is_none() { break } else { false },
                    c = node_changes.recv() => if c.is_none() { break } else { false },
                    c = pod_changes.recv() => match c { Some(c) => echoes.is_echo(&c), None => break },
                };
                if !echo {
                    wake.notify_one();
                }
            }
        }
    };
    let work = async {
        tasks.wait_synced().await;
        queues.wait_synced().await;
        nodes.wait_synced().await;
        pods.wait_synced().await;
        let mut assumed_tasks = Assumed::<MLTask>::new();
        let mut assumed_pods = Assumed::<Pod>::new();
        // Pod creations the API refused, reported once each.
        let mut refused: BTreeSet<String> = BTreeSet::new();
        // When each task's status was last written (for the throttle of standing-only changes).
        let mut written: BTreeMap<String, Time> = BTreeMap::new();
        loop {
            let started = Instant::now();
            // Ended tasks whose replicas hold nothing, and those replicas, are left out: they
            // are most of a busy cluster's objects and a pass has nothing to do with them.
            let finished: Finished = tasks.filter_map(finished_entry).into_iter().collect();
            // Tasks are shared with the informer's cache, not copied: most wait unchanged.
            let mut task_list =
                assumed_tasks.overlay(tasks.list_filtered_shared(|t| !settled::finished(t)), false);
            let pod_list: Vec<Pod> = assumed_pods
                .overlay(
                    pods.list_filtered_shared(|p| pod_needed(p, &finished)),
                    true,
                )
                .into_iter()
                .filter(|p| pod_needed(p, &finished))
                .map(|p| Pod::clone(&p))
                .collect();
            for key in tasks_of_holding(&pod_list, &finished) {
                if !task_list.iter().any(|t| task_key(t) == key) {
                    task_list.extend(tasks.get_shared(&key));
                }
            }
            let (queue_list, node_list) = (queues.list(), nodes.list());
            let datasets = dataset_names(&client, &task_list).await;
            let snapshot = Snapshot {
                tasks: &task_list,
                queues: &queue_list,
                nodes: &node_list,
                pods: &pod_list,
                datasets: datasets.as_ref(),
                standing_written: &written,
            };
            let now = chrono::Utc::now();
            let outcome = pass(&snapshot, now, config.backoff_base);
            let pass_cost = started.elapsed();
            tracing::debug!(
                tasks = task_list.len(),
                pods = pod_list.len(),
                actions = outcome.actions.len(),
                us = started.elapsed().as_micros() as u64,
                "mltask pass"
            );
            // Statuses first: a task whose status did not take gets no event and no pod this
            // pass (the next pass decides again from what the API holds).
            let (statuses, rest): (Vec<Action>, Vec<Action>) = outcome
                .actions
                .into_iter()
                .partition(|a| matches!(a, Action::Status(_)));
            // An older write holds nothing back any more.
            written.retain(|_, at| {
                (now - *at)
                    .to_std()
                    .is_ok_and(|age| age < standing::LONGEST_INTERVAL)
            });
            // Each task's writes, in order; tasks are written concurrently (the store commits
            // writes that arrive together in one transaction).
            let mut groups: BTreeMap<String, Vec<Action>> = BTreeMap::new();
            for (i, action) in statuses.into_iter().chain(rest).enumerate() {
                if let Action::Status(t) = &action {
                    written.insert(task_key(t), now);
                }
                let owner = match &action {
                    Action::Status(t) | Action::Event { task: t, .. } => Some(task_key(t)),
                    Action::CreatePod(p) => p
                        .metadata
                        .labels
                        .get(super::replicas::LABEL_TASK)
                        .map(|t| format!("{}/{t}", p.metadata.ns())),
                    _ => None,
                };
                // Writes of no task (deletions, queue statuses) each go on their own.
                let group = owner.unwrap_or_else(|| format!("\u{0}{i}"));
                groups.entry(group).or_default().push(action);
            }
            let refused_now = std::sync::Mutex::new(std::mem::take(&mut refused));
            echoes.prune();
            let results: Vec<(Vec<Written>, bool)> =
                futures_util::stream::iter(groups.into_values().map(|actions| {
                    let (client, recorder, refused) = (&client, &recorder, &refused_now);
                    let echoes = &echoes;
                    async move {
                        let mut done = Vec::new();
                        for action in actions {
                            // A task whose status did not take gets no event and no pod this
                            // pass (the next pass decides again from what the API holds).
                            let is_status = matches!(action, Action::Status(_));
                            match execute(client, recorder, action, refused).await {
                                Ok(Some(w)) => {
                                    match &w {
                                        Written::Task(t) => echoes.expect(t.as_ref()),
                                        Written::Pod(p) => echoes.expect(p.as_ref()),
                                    }
                                    done.push(w)
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    tracing::debug!(error = %e, "mltask write failed; the next pass retries");
                                    return (done, is_status);
                                }
                            }
                        }
                        (done, false)
                    }
                }))
                .buffer_unordered(WRITE_CONCURRENCY)
                .collect()
                .await;
            refused = refused_now.into_inner().unwrap_or_else(|e| e.into_inner());
            let mut retry_soon = false;
            for (done, failed) in results {
                retry_soon |= failed;
                for w in done {
                    match w {
                        Written::Task(t) => assumed_tasks.remember(*t),
                        Written::Pod(p) => assumed_pods.remember(*p),
                    }
                }
            }
            let mut wait = outcome
                .next_at
                .map(|t| (t - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::from_secs(30));
            if retry_soon {
                wait = wait.min(Duration::from_millis(500));
            }
            // Wake on any change, or when a back-off or deadline ends.
            let _ = tokio::time::timeout(wait, wake.notified()).await;
            // A pass over a long queue costs milliseconds. Changes that arrive within as long
            // again join the next pass instead of each waking one: with many tasks this bounds
            // the controller to about half a CPU and lets a replica's Running and Succeeded,
            // seen together, move its task in one write. A short queue is not held back.
            let batch = pass_cost.min(MAX_BATCH_WAIT);
            if batch >= MIN_BATCH_WAIT {
                tokio::time::sleep(batch).await;
            }
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = forward => {}
        _ = work => {}
    }
}

/// An object a write returned, to prefer over informers that have not shown it yet.
enum Written {
    Task(Box<MLTask>),
    Pod(Box<Pod>),
}

async fn execute(
    client: &Client,
    recorder: &EventRecorder,
    action: Action,
    refused: &std::sync::Mutex<BTreeSet<String>>,
) -> Result<Option<Written>, kumo_client::ClientError> {
    match action {
        Action::Status(task) => match client.update_status(task.as_ref()).await {
            Ok(written) => return Ok(Some(Written::Task(Box::new(written)))),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        },
        Action::CreatePod(pod) => match client.create(pod.as_ref()).await {
            Ok(created) => return Ok(Some(Written::Pod(Box::new(created)))),
            // Created by an earlier pass the informer has not shown yet.
            Err(e) if e.code() == Some(409) => {}
            // Refused (the API's rules changed, a namespace is going away): say so on the task.
            Err(e) if e.code().is_some_and(|c| (400..500).contains(&c)) => {
                let message = format!("cannot create replica pod {}: {e}", pod.metadata.name);
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
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, rv: &str) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = Some("default".into());
        p.metadata.resource_version = Some(rv.into());
        Arc::new(p)
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter()
            .map(|p| format!("{}@{}", p.metadata.name, p.metadata.revision()))
            .collect()
    }

    #[test]
    fn written_objects_win_until_the_informer_catches_up() {
        let mut assumed = Assumed::<Pod>::new();
        assumed.remember(Pod::clone(&pod("a", "5")));
        assumed.remember(Pod::clone(&pod("b", "7")));
        // The informer still has an older `a` and no `b`.
        let seen = assumed.overlay(vec![pod("a", "3")], true);
        assert_eq!(names(&seen), ["a@5", "b@7"]);
        // Without `add`, only objects the informer has are replaced (a deleted task stays gone).
        assert_eq!(names(&assumed.overlay(vec![pod("a", "3")], false)), ["a@5"]);
        // Once the informer shows them, the informer's copies are used and forgotten here.
        let seen = assumed.overlay(vec![pod("a", "6"), pod("b", "7")], true);
        assert_eq!(names(&seen), ["a@6", "b@7"]);
        assert!(assumed.objects.is_empty());
    }
}
