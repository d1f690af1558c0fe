//! One task's gang through its life, as pure functions the pass calls. `step` runs one phase
//! (cancel, queued, admitted/running, deadline); each phase returns what it decided (a small
//! enum or struct) and `step` applies it to the task's next status and the pass's writes:
//! progress from what the pods show (create the missing replicas, notice failures, success,
//! the deadline), the restart or the end after a failure, cancel, and how admission should see
//! the task.

use super::admission::{TaskState, TaskView};
use super::outcome::{cond, holds, phase, Action, Outcome};
use super::replicas::{placement_pod, rank_of, replica_pod, same_placement};
use kumo_api::keys::{
    parse_gpu_devices, ANNOTATION_EVICTION_REQUESTED, ANNOTATION_GPU_DEVICES, ANNOTATION_GPU_USAGE,
};
use kumo_api::meta::set_condition;
use kumo_api::mltask::{MLTaskStatus, ReplicaStatus, TaskPhase};
use kumo_api::node::Node;
use kumo_api::{MLTask, Pod, PodPhase, Time};
use kumo_client::clock;
use kumo_scheduler::{NodeView, Resources};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Longest back-off between two attempts of a task.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How a replica's container ended, when it did.
fn exit_code(pod: &Pod) -> Option<i32> {
    let cs = pod.status.as_ref()?.container_statuses.first()?;
    cs.state.terminated.as_ref().map(|t| t.exit_code)
}

/// Why a replica counts as failed: it exited non-zero, or its node was lost.
fn failure(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    match status.phase {
        PodPhase::Failed => Some(match exit_code(pod) {
            Some(code) => format!("exit code {code}"),
            None => status.reason.clone().unwrap_or_else(|| "pod failed".into()),
        }),
        PodPhase::Unknown => Some(
            status
                .message
                .clone()
                .unwrap_or_else(|| "its node was lost".into()),
        ),
        _ => None,
    }
}

/// How often a task waiting for a missing dataset looks for it again.
pub const DATASET_RECHECK_SECONDS: i64 = 2;

/// The back-off before attempt `attempt + 1`: `base * 2^(attempt-1)`, capped.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    // At most 2^16 times the base, as before the curve was shared.
    kumo_client::retry::delay(base, MAX_BACKOFF, attempt.clamp(1, 17) as u32)
}

/// Replica 0's address when it is known before replica 0 runs: a process replica runs on the
/// host, so its address is its node's.
fn known_rank0_addr(task: &MLTask, node: &str, nodes: &[Node]) -> Option<String> {
    if task.spec.runtime_class_name.as_deref() != Some(kumo_api::pod::RUNTIME_PROCESS) {
        return None;
    }
    nodes
        .iter()
        .find(|n| n.metadata.name == node)
        .and_then(|n| n.status.as_ref())
        .and_then(|s| {
            s.addresses
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .or(s.addresses.first())
        })
        .map(|a| a.address.clone())
}

/// The replica statuses of a gang: where each runs, its GPUs, phase and exit code.
pub(super) fn replica_statuses(
    task: &MLTask,
    placement: &[String],
    pods: &[&Pod],
) -> Vec<ReplicaStatus> {
    placement
        .iter()
        .enumerate()
        .map(|(rank, node)| {
            let pod = pods.iter().find(|p| rank_of(p) == Some(rank));
            let gpus = pod
                .and_then(|p| p.metadata.annotations.get(ANNOTATION_GPU_DEVICES))
                .and_then(|a| parse_gpu_devices(a))
                .map(|a| a.into_values().flatten().map(|i| i.to_string()).collect())
                .unwrap_or_default();
            ReplicaStatus {
                rank: rank as i32,
                pod: super::replicas::pod_name(&task.metadata.name, rank),
                node: Some(node.clone()),
                gpus,
                phase: pod.map(|p| phase(p)),
                exit_code: pod.and_then(|p| exit_code(p)),
                // Copied as the agent sampled it, fake label included.
                gpu_usage: pod
                    .and_then(|p| p.metadata.annotations.get(ANNOTATION_GPU_USAGE))
                    .and_then(|a| kumo_api::gpu_usage::parse(a))
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// Placement pods of waiting tasks, shared by the tasks of one shape within a pass: a long
/// queue of alike tasks then builds (and drops) one pod, not one per task.
#[derive(Default)]
pub(super) struct PlacementPods<'a>(Vec<(&'a MLTask, Arc<Pod>)>);

impl<'a> PlacementPods<'a> {
    /// How many shapes are remembered; more are built each time (a pass over very mixed
    /// tasks stays linear).
    const SHAPES: usize = 16;

    fn get(&mut self, task: &'a MLTask) -> Arc<Pod> {
        if let Some((_, pod)) = self.0.iter().find(|(t, _)| same_placement(t, task)) {
            return pod.clone();
        }
        let pod = Arc::new(placement_pod(task, None));
        if self.0.len() < Self::SHAPES {
            self.0.push((task, pod.clone()));
        }
        pod
    }
}

/// What one task's step reads: the task, its replica pods and the pass's inputs.
pub(super) struct StepInput<'t, 's> {
    pub task: &'t MLTask,
    /// `namespace/name`.
    pub key: &'s str,
    /// The task's replica pods.
    pub mine: &'s [&'s Pod],
    pub nodes: &'s [Node],
    /// Names of the complete datasets (`None`: the server could not say).
    pub datasets: Option<&'s BTreeSet<String>>,
    pub now: Time,
    pub backoff_base: Duration,
}

impl<'s> StepInput<'_, 's> {
    /// Replicas, within the API's bound: a task stored before it may ask for more.
    fn parallelism(&self) -> usize {
        self.task
            .spec
            .parallelism
            .clamp(1, kumo_api::bounds::MAX_PARALLELISM) as usize
    }

    /// The replica pods still holding their node's resources.
    fn holding(&self) -> impl Iterator<Item = &'s Pod> + '_ {
        self.mine.iter().copied().filter(|p| holds(p))
    }

    /// How admission sees the task in `state`.
    fn view(&self, new: &MLTaskStatus, state: TaskState, replicas: Vec<Arc<Pod>>) -> TaskView {
        // Timestamps have whole seconds: within one, the earlier revision was submitted first.
        let created = self.task.metadata.creation_timestamp.unwrap_or(self.now);
        let within_second = Duration::from_nanos(new.submit_revision.unwrap_or(0) % 1_000_000_000);
        let created = clock::add(created, within_second).unwrap_or(created);
        TaskView {
            key: self.key.to_string(),
            queue: self.task.spec.queue.clone(),
            priority: self.task.spec.priority,
            created,
            replicas,
            state,
        }
    }
}

/// Moves one task along from what its pods show; returns how admission should see it (`None`:
/// not at all, e.g. finished or waiting out a back-off).
pub(super) fn step<'t>(
    input: &StepInput<'t, '_>,
    new: &mut MLTaskStatus,
    placements: &mut PlacementPods<'t>,
    views: &mut [NodeView],
    out: &mut Outcome,
) -> Option<TaskView> {
    if new.phase.is_finished() {
        // Nothing of a failed or cancelled task keeps running; ended pods stay for their logs.
        for p in input.holding() {
            out.delete(p);
        }
        return None;
    }
    if new.submit_revision.is_none() {
        new.submit_revision = Some(input.task.metadata.revision());
    }
    if let Some(c) = cancel(input) {
        apply_cancel(input, c, new, out);
        return None;
    }
    match new.phase {
        TaskPhase::Queued => {
            let decided = queued(input, new);
            apply_queued(input, decided, new, placements, out)
        }
        TaskPhase::Admitted | TaskPhase::Running => admitted(input, new, views, out),
        _ => None,
    }
}

/// The cancel phase's decision: the user cancelled the task; these replicas still run.
struct Cancel<'s> {
    stop: Vec<&'s Pod>,
}

fn cancel<'s>(input: &StepInput<'_, 's>) -> Option<Cancel<'s>> {
    input.task.spec.cancel.then(|| Cancel {
        stop: input.holding().collect(),
    })
}

fn apply_cancel(input: &StepInput, c: Cancel, new: &mut MLTaskStatus, out: &mut Outcome) {
    let now = input.now;
    for p in &c.stop {
        out.delete(p);
    }
    new.phase = TaskPhase::Cancelled;
    new.completion_time = Some(now);
    new.queue_position = None;
    new.pending_reason = None;
    new.retry_at = None;
    new.message = Some("cancelled by the user".into());
    set_condition(
        &mut new.conditions,
        cond(
            "Cancelled",
            true,
            "Cancelled",
            "cancelled by the user".into(),
            now,
        ),
    );
    out.event(
        input.task,
        false,
        "Cancelled",
        format!("cancelled: stopping {} replica(s)", c.stop.len()),
    );
}

/// The queued phase's decision.
#[derive(Debug, PartialEq)]
enum Queued<'s> {
    /// The previous attempt's pods go first (their names are reused); admission sees those
    /// still holding their nodes as a task being preempted.
    ClearPrevious { holding: Vec<&'s Pod> },
    /// Its dataset is missing, or the server could not say: it waits (the reason says why).
    NoDataset { reason: String },
    /// Waiting out the back-off after a gang failure.
    BackingOff { until: Time },
    /// Ready for admission.
    Pending,
}

fn queued<'s>(input: &StepInput<'_, 's>, new: &MLTaskStatus) -> Queued<'s> {
    if !input.mine.is_empty() {
        return Queued::ClearPrevious {
            holding: input.holding().collect(),
        };
    }
    let datasets = input.datasets;
    if let Some(name) = input
        .task
        .spec
        .data
        .as_ref()
        .and_then(|d| d.dataset.as_ref())
    {
        if !datasets.is_some_and(|d| d.contains(name)) {
            let reason = match datasets {
                Some(_) => format!(
                    "spec.data.dataset: dataset {name:?} does not exist (push it with `kumo dataset push DIR {name}`)"
                ),
                None => format!(
                    "spec.data.dataset: cannot tell whether dataset {name:?} exists (the server did not list datasets)"
                ),
            };
            return Queued::NoDataset { reason };
        }
    }
    match new.retry_at.filter(|at| *at > input.now) {
        Some(until) => Queued::BackingOff { until },
        None => Queued::Pending,
    }
}

fn apply_queued<'t>(
    input: &StepInput<'t, '_>,
    decided: Queued,
    new: &mut MLTaskStatus,
    placements: &mut PlacementPods<'t>,
    out: &mut Outcome,
) -> Option<TaskView> {
    match decided {
        Queued::ClearPrevious { holding } => {
            for p in input.mine {
                out.delete(p);
            }
            if holding.is_empty() {
                return None;
            }
            let nodes = holding
                .iter()
                .map(|p| p.spec.node_name.clone().unwrap_or_default())
                .collect();
            let replicas = holding.iter().map(|p| Arc::new((*p).clone())).collect();
            let state = TaskState::Holding {
                nodes,
                ends_by: None,
                preempting: true,
            };
            Some(input.view(new, state, replicas))
        }
        Queued::NoDataset { reason } => {
            new.queue_position = None;
            new.pending_reason = Some(reason);
            // Datasets are not watched: look again for one pushed meanwhile.
            if let Some(at) = clock::add_seconds(input.now, DATASET_RECHECK_SECONDS) {
                out.wake_at(at);
            }
            None
        }
        Queued::BackingOff { until } => {
            out.wake_at(until);
            new.queue_position = None;
            None
        }
        Queued::Pending => {
            // Admission needs what placement sees of each replica, not the replica pods.
            let replicas = vec![placements.get(input.task); input.parallelism()];
            Some(input.view(new, TaskState::Pending, replicas))
        }
    }
}

/// How an admitted gang ended, when it did.
#[derive(Debug, PartialEq)]
enum Ended {
    /// The lowest-ranked replica that failed, and why (its pod may have vanished).
    Failed { rank: usize, why: String },
    /// Every replica exited 0.
    Succeeded,
}

/// The admitted/running phase: placement held, replicas created, the end noticed, the
/// deadline watched (the deadline phase), and the move to `Running`.
fn admitted(
    input: &StepInput,
    new: &mut MLTaskStatus,
    views: &mut [NodeView],
    out: &mut Outcome,
) -> Option<TaskView> {
    let (task, mine, now) = (input.task, input.mine, input.now);
    let n = input.parallelism();
    let Some(placement) = whole_placement(new, n) else {
        // A status without a whole placement cannot be continued: admit it again.
        new.phase = TaskPhase::Queued;
        new.replicas.clear();
        return None;
    };
    reserve_missing(input, &placement, views);
    // A deadline past the calendar's end (stored before the bound) never comes.
    let ends_by = new.start_time.and_then(|s| {
        task.spec
            .active_deadline_seconds
            .and_then(|d| clock::add_seconds(s, d))
    });
    let holding = input.view(
        new,
        TaskState::Holding {
            nodes: placement.clone(),
            ends_by,
            preempting: false,
        },
        placement
            .iter()
            .map(|node| Arc::new(placement_pod(task, Some(node))))
            .collect(),
    );
    let ended = ended(mine, &new.replicas, n);
    new.replicas = replica_statuses(task, &placement, mine);
    match ended {
        Some(Ended::Failed { rank, why }) => {
            let decided = after_failure(input, new.attempts, rank, &why);
            apply_failure(input, decided, new, out);
            return None;
        }
        Some(Ended::Succeeded) => {
            let message = format!("all {n} replica(s) exited 0");
            new.phase = TaskPhase::Succeeded;
            new.completion_time = Some(now);
            new.message = Some(message.clone());
            set_condition(
                &mut new.conditions,
                cond("Succeeded", true, "Completed", message.clone(), now),
            );
            out.event(task, false, "Completed", message);
            return None;
        }
        None => {}
    }
    if let Some(pod) = mine.iter().find(|p| eviction_requested(p)) {
        requeue_evicted(input, new, pod, out);
        return None;
    }
    match deadline(input, ends_by) {
        Some(Deadline::Passed { message }) => {
            for p in input.holding() {
                out.delete(p);
            }
            finish_failed(task, new, "DeadlineExceeded", message, now, out);
            return None;
        }
        Some(Deadline::Later(end)) => out.wake_at(end),
        None => {}
    }
    create_missing(task, mine, new.attempts, &placement, input.nodes).apply(new, out);
    if new.phase == TaskPhase::Admitted && all_started(mine, n) {
        let message = format!("all {n} replica(s) started");
        new.phase = TaskPhase::Running;
        set_condition(
            &mut new.conditions,
            cond("Running", true, "AllReplicasRunning", message.clone(), now),
        );
        out.event(task, false, "Running", message);
    }
    Some(holding)
}

/// Whether an eviction asked for this replica to go (`kumo drain` of its node).
fn eviction_requested(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .metadata
            .annotations
            .contains_key(ANNOTATION_EVICTION_REQUESTED)
}

/// An evicted replica stops the gang as preemption does: every replica is stopped gracefully
/// (SIGTERM and the grace period, so it can checkpoint) and the task goes back to its queue
/// with its attempts as they were; admission places it again, off the cordoned node.
fn requeue_evicted(input: &StepInput, new: &mut MLTaskStatus, pod: &Pod, out: &mut Outcome) {
    for p in input.mine {
        out.delete(p);
    }
    let why = format!(
        "evicted: replica pod {} on node {} was evicted (the node is drained); back to the queue, attempt {} not counted",
        pod.metadata.name,
        pod.spec.node_name.as_deref().unwrap_or("?"),
        new.attempts
    );
    new.phase = TaskPhase::Queued;
    new.pending_reason = Some(why.clone());
    new.queue_position = None;
    new.master_addr = None;
    new.replicas.clear();
    set_condition(
        &mut new.conditions,
        cond("Admitted", false, "Evicted", why.clone(), input.now),
    );
    out.event(input.task, false, "Evicted", why);
}

/// The nodes of ranks `0..n` as the status records them, when it records all of them.
fn whole_placement(new: &MLTaskStatus, n: usize) -> Option<Vec<String>> {
    let mut placement: Vec<String> = new.replicas.iter().filter_map(|r| r.node.clone()).collect();
    placement.truncate(n);
    (placement.len() == n).then_some(placement)
}

/// Replicas not created yet still have their place reserved on their node.
fn reserve_missing(input: &StepInput, placement: &[String], views: &mut [NodeView]) {
    let wants = Resources::of_pod(&placement_pod(input.task, None));
    for (rank, node) in placement.iter().enumerate() {
        if !input.mine.iter().any(|p| rank_of(p) == Some(rank)) {
            if let Some(v) = views.iter_mut().find(|v| &v.name == node) {
                v.requested.add(&wants);
            }
        }
    }
}

/// Whether the gang has ended, from its pods and the replicas its status saw before.
fn ended(mine: &[&Pod], seen: &[ReplicaStatus], n: usize) -> Option<Ended> {
    // A replica seen before whose pod is gone was deleted under the task: a failure too.
    let vanished = seen
        .iter()
        .find(|r| r.phase.is_some() && !mine.iter().any(|p| rank_of(p) == Some(r.rank as usize)))
        .map(|r| (r.rank as usize, "its pod was deleted".to_string()));
    let failed = mine
        .iter()
        .filter_map(|p| Some((rank_of(p)?, failure(p)?)))
        .chain(vanished)
        .min_by_key(|(rank, _)| *rank);
    if let Some((rank, why)) = failed {
        return Some(Ended::Failed { rank, why });
    }
    (exited(mine) == n).then_some(Ended::Succeeded)
}

fn exited(mine: &[&Pod]) -> usize {
    mine.iter()
        .filter(|p| phase(p) == PodPhase::Succeeded)
        .count()
}

/// Whether every replica exists and has started (some may have exited 0 already).
fn all_started(mine: &[&Pod], n: usize) -> bool {
    let running = mine
        .iter()
        .filter(|p| phase(p) == PodPhase::Running)
        .count();
    mine.len() == n && running > 0 && running + exited(mine) == n
}

/// The deadline phase's decision.
#[derive(Debug, PartialEq)]
enum Deadline {
    /// The task ran past its `activeDeadlineSeconds`: it fails.
    Passed { message: String },
    /// Look again then.
    Later(Time),
}

fn deadline(input: &StepInput, ends_by: Option<Time>) -> Option<Deadline> {
    let end = ends_by?;
    if end > input.now {
        return Some(Deadline::Later(end));
    }
    let message = format!(
        "ran longer than activeDeadlineSeconds ({}s)",
        input.task.spec.active_deadline_seconds.unwrap_or_default()
    );
    Some(Deadline::Passed { message })
}

/// The replica pods to create, and replica 0's address once it is known.
pub(super) struct Missing {
    pods: Vec<Pod>,
    master_addr: Option<String>,
}

impl Missing {
    pub(super) fn apply(self, new: &mut MLTaskStatus, out: &mut Outcome) {
        for pod in self.pods {
            out.actions.push(Action::CreatePod(Box::new(pod)));
        }
        if let Some(master) = self.master_addr {
            new.master_addr = Some(master);
        }
    }
}

/// The missing replicas. When replica 0's address is known beforehand (process replicas:
/// their node's), all at once; otherwise replica 0 first, and the others once it reports its
/// pod IP, which they get as `MASTER_ADDR` (replica 0 itself rendezvous on loopback inside its
/// own network namespace).
pub(super) fn create_missing(
    task: &MLTask,
    mine: &[&Pod],
    attempts: i32,
    placement: &[String],
    nodes: &[Node],
) -> Missing {
    let attempt = attempts.max(1);
    let mut pods = Vec::new();
    let rank0 = mine.iter().find(|p| rank_of(p) == Some(0));
    let master = known_rank0_addr(task, &placement[0], nodes).or_else(|| {
        rank0
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.pod_ip.clone())
    });
    if rank0.is_none() {
        let addr = master.clone().unwrap_or_else(|| "127.0.0.1".to_string());
        pods.push(replica_pod(task, 0, Some(&placement[0]), &addr, attempt));
    }
    if let Some(master) = &master {
        for (rank, node) in placement.iter().enumerate().skip(1) {
            if !mine.iter().any(|p| rank_of(p) == Some(rank)) {
                pods.push(replica_pod(task, rank, Some(node), master, attempt));
            }
        }
    }
    Missing {
        pods,
        master_addr: master,
    }
}

/// What a replica's failure leads to: the whole gang stops either way.
#[derive(Debug, PartialEq)]
enum AfterFailure {
    /// No retries left: the task fails.
    GiveUp { message: String },
    /// Back to its queue as attempt `attempts`, once the back-off ends `at`.
    Restart {
        attempts: i32,
        at: Time,
        message: String,
    },
}

fn after_failure(input: &StepInput, attempts: i32, rank: usize, why: &str) -> AfterFailure {
    let attempt = attempts.max(1);
    let allowed = input.task.spec.max_retries.saturating_add(1);
    if attempt >= allowed {
        let message = format!(
            "replica {rank} failed ({why}) on attempt {attempt} of {allowed}; no retries left"
        );
        return AfterFailure::GiveUp { message };
    }
    let delay = backoff(input.backoff_base, attempt);
    let at = clock::add(input.now, delay).unwrap_or(input.now);
    let delay_text = if delay < Duration::from_secs(1) {
        format!("{}ms", delay.as_millis())
    } else {
        format!("{}s", delay.as_secs())
    };
    let attempts = attempt.saturating_add(1);
    let message = format!(
        "replica {rank} failed ({why}): restarting the whole gang as attempt {attempts} of {allowed} after a {delay_text} back-off",
    );
    AfterFailure::Restart {
        attempts,
        at,
        message,
    }
}

fn apply_failure(
    input: &StepInput,
    decided: AfterFailure,
    new: &mut MLTaskStatus,
    out: &mut Outcome,
) {
    let (task, now) = (input.task, input.now);
    for p in input.holding() {
        out.delete(p);
    }
    let (attempts, at, message) = match decided {
        AfterFailure::GiveUp { message } => {
            finish_failed(task, new, "BackoffLimitExceeded", message, now, out);
            return;
        }
        AfterFailure::Restart {
            attempts,
            at,
            message,
        } => (attempts, at, message),
    };
    // Ended pods of this attempt are deleted too: the next attempt reuses their names.
    for p in input.mine.iter().filter(|p| !holds(p)) {
        out.delete(p);
    }
    new.phase = TaskPhase::Queued;
    new.attempts = attempts;
    new.retry_at = Some(at);
    new.master_addr = None;
    new.queue_position = None;
    new.replicas.clear();
    new.pending_reason = Some(message.clone());
    set_condition(
        &mut new.conditions,
        cond("Admitted", false, "Restarting", message.clone(), now),
    );
    set_condition(
        &mut new.conditions,
        cond("Running", false, "ReplicaFailed", message.clone(), now),
    );
    out.event(task, true, "Restarting", message);
    out.wake_at(at);
}

fn finish_failed(
    task: &MLTask,
    new: &mut MLTaskStatus,
    reason: &'static str,
    message: String,
    now: Time,
    out: &mut Outcome,
) {
    new.phase = TaskPhase::Failed;
    new.completion_time = Some(now);
    new.retry_at = None;
    new.message = Some(message.clone());
    set_condition(
        &mut new.conditions,
        cond("Failed", true, reason, message.clone(), now),
    );
    out.event(task, true, reason, message);
}

#[cfg(test)]
#[path = "gang_tests.rs"]
mod tests;
