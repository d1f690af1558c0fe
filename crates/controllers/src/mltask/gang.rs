//! One task's gang through its life, as pure functions the pass calls: progress from what its
//! pods show (create the missing replicas, notice failures, success, the deadline), the
//! restart or the end after a failure, cancel, and how admission should see the task.

use super::admission::{TaskState, TaskView};
use super::pass::{Action, Outcome};
use super::replicas::{placement_pod, rank_of, replica_pod, same_placement};
use kumo_api::gpu_usage::ANNOTATION_GPU_USAGE;
use kumo_api::meta::set_condition;
use kumo_api::mltask::{MLTaskStatus, ReplicaStatus, TaskPhase};
use kumo_api::node::Node;
use kumo_api::pod::ANNOTATION_GPU_DEVICES;
use kumo_api::{Condition, ConditionStatus, MLTask, Pod, PodPhase, Time};
use kumo_client::clock;
use kumo_scheduler::{NodeView, Resources};
use std::sync::Arc;
use std::time::Duration;

/// Longest back-off between two attempts of a task.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

pub(super) fn phase(pod: &Pod) -> PodPhase {
    pod.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// Whether a pod still holds its node's resources (it has not ended).
pub(super) fn holds(pod: &Pod) -> bool {
    !phase(pod).is_terminal()
}

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
    let shift = (attempt - 1).clamp(0, 16) as u32;
    base.saturating_mul(1u32 << shift).min(MAX_BACKOFF)
}

pub(super) fn cond(type_: &str, ok: bool, reason: &str, message: String, now: Time) -> Condition {
    let status = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    Condition::new(type_, status, Some(reason), Some(message), now)
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
                .map(|a| {
                    a.split(';')
                        .filter_map(|part| part.split_once('='))
                        .flat_map(|(_, ids)| ids.split(',').map(str::to_string))
                        .filter(|s| !s.is_empty())
                        .collect()
                })
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

/// Moves one task along from what its pods show; returns how admission should see it (`None`:
/// not at all, e.g. finished or waiting out a back-off).
#[allow(clippy::too_many_arguments)]
pub(super) fn step<'a>(
    task: &'a MLTask,
    key: &str,
    placements: &mut PlacementPods<'a>,
    mine: &[&Pod],
    new: &mut MLTaskStatus,
    views: &mut [NodeView],
    nodes: &[Node],
    datasets: Option<&std::collections::BTreeSet<String>>,
    now: Time,
    backoff_base: Duration,
    out: &mut Outcome,
) -> Option<TaskView> {
    // Within the API's bound: a task stored before it may ask for more.
    let n = task
        .spec
        .parallelism
        .clamp(1, kumo_api::bounds::MAX_PARALLELISM) as usize;
    if new.phase.is_finished() {
        // Nothing of a failed or cancelled task keeps running; ended pods stay for their logs.
        for p in mine.iter().filter(|p| holds(p)) {
            out.delete(p);
        }
        return None;
    }
    if new.submit_revision.is_none() {
        new.submit_revision = Some(task.metadata.revision());
    }
    // Timestamps have whole seconds: within one, the earlier revision was submitted first.
    let created = task.metadata.creation_timestamp.unwrap_or(now);
    let within_second = Duration::from_nanos(new.submit_revision.unwrap_or(0) % 1_000_000_000);
    let created = clock::add(created, within_second).unwrap_or(created);
    let view = |state: TaskState, replicas: Vec<Arc<Pod>>| TaskView {
        key: key.to_string(),
        queue: task.spec.queue.clone(),
        priority: task.spec.priority,
        created,
        replicas,
        state,
    };
    if task.spec.cancel {
        for p in mine.iter().filter(|p| holds(p)) {
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
            task,
            false,
            "Cancelled",
            format!(
                "cancelled: stopping {} replica(s)",
                mine.iter().filter(|p| holds(p)).count()
            ),
        );
        return None;
    }
    match new.phase {
        TaskPhase::Queued => {
            if !mine.is_empty() {
                // The previous attempt's pods go first (their names are reused).
                for p in mine {
                    out.delete(p);
                }
                let holding: Vec<&Pod> = mine.iter().copied().filter(|p| holds(p)).collect();
                if holding.is_empty() {
                    return None;
                }
                let nodes = holding
                    .iter()
                    .map(|p| p.spec.node_name.clone().unwrap_or_default())
                    .collect();
                let replicas = holding.iter().map(|p| Arc::new((*p).clone())).collect();
                return Some(view(
                    TaskState::Holding {
                        nodes,
                        ends_by: None,
                        preempting: true,
                    },
                    replicas,
                ));
            }
            if let Some(name) = task.spec.data.as_ref().and_then(|d| d.dataset.as_ref()) {
                if !datasets.is_some_and(|d| d.contains(name)) {
                    new.queue_position = None;
                    new.pending_reason = Some(match datasets {
                        Some(_) => format!(
                            "spec.data.dataset: dataset {name:?} does not exist (push it with `kumo dataset push DIR {name}`)"
                        ),
                        None => format!(
                            "spec.data.dataset: cannot tell whether dataset {name:?} exists (the server did not list datasets)"
                        ),
                    });
                    // Datasets are not watched: look again for one pushed meanwhile.
                    if let Some(at) = clock::add_seconds(now, DATASET_RECHECK_SECONDS) {
                        out.wake_at(at);
                    }
                    return None;
                }
            }
            if let Some(at) = new.retry_at.filter(|at| *at > now) {
                out.wake_at(at);
                new.queue_position = None;
                return None;
            }
            // Admission needs what placement sees of each replica, not the replica pods.
            Some(view(TaskState::Pending, vec![placements.get(task); n]))
        }
        TaskPhase::Admitted | TaskPhase::Running => {
            let mut placement: Vec<String> =
                new.replicas.iter().filter_map(|r| r.node.clone()).collect();
            placement.truncate(n);
            if placement.len() != n {
                // A status without a whole placement cannot be continued: admit it again.
                new.phase = TaskPhase::Queued;
                new.replicas.clear();
                return None;
            }
            // Replicas not created yet still have their place reserved on their node.
            let wants = Resources::of_pod(&placement_pod(task, None));
            for (rank, node) in placement.iter().enumerate() {
                if !mine.iter().any(|p| rank_of(p) == Some(rank)) {
                    if let Some(v) = views.iter_mut().find(|v| &v.name == node) {
                        v.requested.add(&wants);
                    }
                }
            }
            let holding = view(
                TaskState::Holding {
                    nodes: placement.clone(),
                    // A deadline past the calendar's end (stored before the bound) never comes.
                    ends_by: new.start_time.and_then(|s| {
                        task.spec
                            .active_deadline_seconds
                            .and_then(|d| clock::add_seconds(s, d))
                    }),
                    preempting: false,
                },
                placement
                    .iter()
                    .map(|node| Arc::new(placement_pod(task, Some(node))))
                    .collect(),
            );
            // A replica seen before whose pod is gone was deleted under the task: a failure too.
            let vanished = new.replicas.iter().find(|r| {
                r.phase.is_some() && !mine.iter().any(|p| rank_of(p) == Some(r.rank as usize))
            });
            let vanished = vanished.map(|r| (r.rank as usize, "its pod was deleted".to_string()));
            new.replicas = replica_statuses(task, &placement, mine);
            let failed = mine
                .iter()
                .filter_map(|p| Some((rank_of(p)?, failure(p)?)))
                .chain(vanished)
                .min_by_key(|(rank, _)| *rank);
            if let Some((rank, why)) = failed {
                gang_failed(task, mine, new, rank, &why, now, backoff_base, out);
                return None;
            }
            let exited = mine
                .iter()
                .filter(|p| phase(p) == PodPhase::Succeeded)
                .count();
            if exited == n {
                new.phase = TaskPhase::Succeeded;
                new.completion_time = Some(now);
                new.message = Some(format!("all {n} replica(s) exited 0"));
                set_condition(
                    &mut new.conditions,
                    cond(
                        "Succeeded",
                        true,
                        "Completed",
                        format!("all {n} replica(s) exited 0"),
                        now,
                    ),
                );
                out.event(
                    task,
                    false,
                    "Completed",
                    format!("all {n} replica(s) exited 0"),
                );
                return None;
            }
            if let Some(TaskState::Holding {
                ends_by: Some(end), ..
            }) = Some(&holding.state)
            {
                if *end <= now {
                    let message = format!(
                        "ran longer than activeDeadlineSeconds ({}s)",
                        task.spec.active_deadline_seconds.unwrap_or_default()
                    );
                    for p in mine.iter().filter(|p| holds(p)) {
                        out.delete(p);
                    }
                    finish_failed(task, new, "DeadlineExceeded", message, now, out);
                    return None;
                }
                out.wake_at(*end);
            }
            create_missing(task, mine, new, &placement, nodes, out);
            let running = mine
                .iter()
                .filter(|p| phase(p) == PodPhase::Running)
                .count();
            if new.phase == TaskPhase::Admitted
                && mine.len() == n
                && running > 0
                && running + exited == n
            {
                new.phase = TaskPhase::Running;
                set_condition(
                    &mut new.conditions,
                    cond(
                        "Running",
                        true,
                        "AllReplicasRunning",
                        format!("all {n} replica(s) started"),
                        now,
                    ),
                );
                out.event(
                    task,
                    false,
                    "Running",
                    format!("all {n} replica(s) started"),
                );
            }
            Some(holding)
        }
        _ => None,
    }
}

/// Creates the missing replicas. When replica 0's address is known beforehand (process
/// replicas: their node's), all at once; otherwise replica 0 first, and the others once it
/// reports its pod IP, which they get as `MASTER_ADDR` (replica 0 itself rendezvous on
/// loopback inside its own network namespace).
pub(super) fn create_missing(
    task: &MLTask,
    mine: &[&Pod],
    new: &mut MLTaskStatus,
    placement: &[String],
    nodes: &[Node],
    out: &mut Outcome,
) {
    let attempt = new.attempts.max(1);
    let rank0 = mine.iter().find(|p| rank_of(p) == Some(0));
    let master = known_rank0_addr(task, &placement[0], nodes).or_else(|| {
        rank0
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.pod_ip.clone())
    });
    if rank0.is_none() {
        let addr = master.clone().unwrap_or_else(|| "127.0.0.1".to_string());
        out.actions.push(Action::CreatePod(Box::new(replica_pod(
            task,
            0,
            Some(&placement[0]),
            &addr,
            attempt,
        ))));
    }
    let Some(master) = master else {
        return;
    };
    new.master_addr = Some(master.clone());
    for (rank, node) in placement.iter().enumerate().skip(1) {
        if !mine.iter().any(|p| rank_of(p) == Some(rank)) {
            out.actions.push(Action::CreatePod(Box::new(replica_pod(
                task,
                rank,
                Some(node),
                &master,
                attempt,
            ))));
        }
    }
}

/// A replica failed: the whole gang stops; the task retries after a back-off, or fails.
#[allow(clippy::too_many_arguments)]
fn gang_failed(
    task: &MLTask,
    mine: &[&Pod],
    new: &mut MLTaskStatus,
    rank: usize,
    why: &str,
    now: Time,
    backoff_base: Duration,
    out: &mut Outcome,
) {
    for p in mine {
        if holds(p) {
            out.delete(p);
        }
    }
    let attempt = new.attempts.max(1);
    let allowed = task.spec.max_retries.saturating_add(1);
    if attempt >= allowed {
        let message = format!(
            "replica {rank} failed ({why}) on attempt {attempt} of {allowed}; no retries left"
        );
        finish_failed(task, new, "BackoffLimitExceeded", message, now, out);
        return;
    }
    // Ended pods of this attempt are deleted too: the next attempt reuses their names.
    for p in mine {
        if !holds(p) {
            out.delete(p);
        }
    }
    let delay = backoff(backoff_base, attempt);
    let at = clock::add(now, delay).unwrap_or(now);
    let delay_text = if delay < Duration::from_secs(1) {
        format!("{}ms", delay.as_millis())
    } else {
        format!("{}s", delay.as_secs())
    };
    new.phase = TaskPhase::Queued;
    new.attempts = attempt.saturating_add(1);
    new.retry_at = Some(at);
    new.master_addr = None;
    new.queue_position = None;
    new.replicas.clear();
    let message = format!(
        "replica {rank} failed ({why}): restarting the whole gang as attempt {} of {allowed} after a {delay_text} back-off",
        new.attempts,
    );
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
