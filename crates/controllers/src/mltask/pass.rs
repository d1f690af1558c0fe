//! One reconcile pass over every MLTask, as a pure function: from a snapshot of tasks, queues,
//! nodes and pods to the writes that move each task along (statuses, pods to create or delete,
//! events) and the time to look again.
//!
//! A task's life: `Queued` (waiting for admission, or for the back-off after a gang failure) →
//! `Admitted` (admission placed the whole gang; its pods are created bound to those nodes, all
//! with replica 0's address as `MASTER_ADDR`) → `Running` (every replica runs) →
//! `Succeeded` (every replica exited 0), `Failed` (a replica failed with no retries left, or
//! the deadline passed) or `Cancelled`. A failed replica stops the whole gang; the task goes
//! back to its queue with one more attempt. A preempted task goes back with its attempts as
//! they were.

use super::admission::{admit, Decision, QueueView};
use super::gang::{create_missing, replica_statuses, step, PlacementPods, StepInput};
use super::outcome::{cond, holds};
use super::replicas::belongs_to;
use super::standing::held_until;
use kumo_api::keys::LABEL_TASK;
use kumo_api::meta::set_condition;
use kumo_api::mltask::{MLTaskStatus, TaskPhase, DEFAULT_QUEUE};
use kumo_api::node::Node;
use kumo_api::{MLTask, Pod, Queue, Time};
use kumo_scheduler::{NodeView, Resources};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

pub use super::gang::{backoff, MAX_BACKOFF};
pub use super::outcome::{Action, Outcome};

/// What the pass sees.
pub struct Snapshot<'a> {
    /// Shared with the controller's informer cache (a pass copies only the tasks it writes).
    pub tasks: &'a [Arc<MLTask>],
    pub queues: &'a [Queue],
    pub nodes: &'a [Node],
    /// Every pod (others' pods use node resources too).
    pub pods: &'a [Pod],
    /// Names of the complete datasets (`None`: the server could not say).
    pub datasets: Option<&'a std::collections::BTreeSet<String>>,
    /// When this controller last wrote each task's status (by key), for `standing::held_until`.
    pub standing_written: &'a BTreeMap<String, Time>,
}

/// `namespace/name`.
pub fn task_key(task: &MLTask) -> String {
    format!("{}/{}", task.metadata.ns(), task.metadata.name)
}

/// Decides one pass.
pub fn pass(s: &Snapshot, now: Time, backoff_base: Duration) -> Outcome {
    let mut out = Outcome::default();
    let mut views: Vec<NodeView> = s.nodes.iter().map(NodeView::new).collect();
    views.sort_by(|a, b| a.name.cmp(&b.name));
    for pod in s.pods.iter().filter(|p| holds(p)) {
        if let Some(v) = pod
            .spec
            .node_name
            .as_ref()
            .and_then(|n| views.iter_mut().find(|v| &v.name == n))
        {
            v.requested.add(&Resources::of_pod(pod));
        }
    }

    // Replica pods by their task's key, so each task finds its own without a scan.
    let mut by_task: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in s.pods {
        if let Some(task) = pod.metadata.labels.get(LABEL_TASK) {
            by_task
                .entry(format!("{}/{task}", pod.metadata.ns()))
                .or_default()
                .push(pod);
        }
    }
    // Each task's key, made once a pass (a long queue would otherwise format it a few times).
    let keys: Vec<String> = s.tasks.iter().map(|t| task_key(t)).collect();
    let tasks_by_key: HashMap<&str, &MLTask> = keys
        .iter()
        .zip(s.tasks)
        .map(|(k, t)| (k.as_str(), &**t))
        .collect();
    // Pods whose task is gone are deleted with it (the task owned them).
    for (key, pods) in &by_task {
        for pod in pods {
            if !tasks_by_key
                .get(key.as_str())
                .is_some_and(|t| belongs_to(pod, t))
            {
                out.delete(pod);
            }
        }
    }

    let mut tasks: Vec<(&MLTask, &String)> = s.tasks.iter().map(|t| &**t).zip(&keys).collect();
    // By namespace and name, as `task_key` orders them, without building a key per comparison.
    tasks.sort_by(|(a, _), (b, _)| {
        (a.metadata.ns(), &a.metadata.name).cmp(&(b.metadata.ns(), &b.metadata.name))
    });
    let mut views_for_admission = Vec::new();
    // Each task's next status (the task itself is cloned only when a write or an event needs it).
    let mut next: HashMap<&str, (&MLTask, MLTaskStatus)> = HashMap::with_capacity(keys.len());
    let mut placements = PlacementPods::default();
    for (task, key) in tasks {
        let mine: Vec<&Pod> = by_task
            .get(key)
            .map(|pods| {
                pods.iter()
                    .copied()
                    .filter(|p| belongs_to(p, task))
                    .collect()
            })
            .unwrap_or_default();
        let mut new = task.status.clone().unwrap_or_default();
        let (actions_before, next_at_before) = (out.actions.len(), out.next_at);
        let stepped = kumo_client::guard_pure(|| {
            #[cfg(test)]
            super::pass_tests::panic_if_asked(key);
            let input = StepInput {
                task,
                key,
                mine: &mine,
                nodes: s.nodes,
                datasets: s.datasets,
                now,
                backoff_base,
            };
            step(&input, &mut new, &mut placements, &mut views, &mut out)
        });
        match stepped {
            Ok(Some(view)) => views_for_admission.push(view),
            Ok(None) => {}
            Err(why) => {
                // One task's numbers broke its step (one stored before a bound): its writes of
                // this pass go, its status is not written, and the pass goes on for the others.
                // (A reservation it made on a node stays for this pass: the safe side.)
                out.actions.truncate(actions_before);
                out.next_at = next_at_before;
                out.failed.push((key.clone(), why));
                continue;
            }
        }
        next.insert(key.as_str(), (task, new));
    }

    let mut queues: Vec<QueueView> = s
        .queues
        .iter()
        .map(|q| QueueView {
            name: q.metadata.name.clone(),
            gpu_quota: q.spec.gpu_quota,
        })
        .collect();
    if !queues.iter().any(|q| q.name == DEFAULT_QUEUE) {
        queues.push(QueueView {
            name: DEFAULT_QUEUE.to_string(),
            gpu_quota: None,
        });
    }
    let decision = admit(&views_for_admission, &queues, &views, now);
    apply_decision(&decision, &mut next, s, now, &mut out);

    for (task, key) in s.tasks.iter().zip(&keys) {
        if let Some((_, new)) = next.remove(key.as_str()) {
            let old = task.status.as_ref();
            if let Some(at) = held_until(key, old, &new, s.standing_written, now) {
                out.wake_at(at);
            } else if old != Some(&new) {
                let mut t = MLTask::clone(task);
                t.status = Some(new);
                out.actions.push(Action::Status(Box::new(t)));
            }
        }
    }
    queue_statuses(s, &mut out);
    out
}

/// Carries out admission's decision on the tasks' next statuses.
fn apply_decision(
    d: &Decision,
    next: &mut HashMap<&str, (&MLTask, MLTaskStatus)>,
    s: &Snapshot,
    now: Time,
    out: &mut Outcome,
) {
    for key in &d.admit {
        let (Some((task, st)), Some(placement)) =
            (next.get_mut(key.as_str()), d.placements.get(key))
        else {
            continue;
        };
        let replicas = replica_statuses(task, placement, &[]);
        st.phase = TaskPhase::Admitted;
        st.attempts = st.attempts.max(1);
        st.start_time = Some(now);
        st.completion_time = None;
        st.queue_position = None;
        st.pending_reason = None;
        st.retry_at = None;
        st.master_addr = None;
        st.replicas = replicas;
        let mut nodes: Vec<&str> = placement.iter().map(String::as_str).collect();
        nodes.dedup();
        let message = format!(
            "admitted: {}×{} GPUs on {} (attempt {})",
            placement.len(),
            task.spec.resources.gpus,
            nodes.join(", "),
            st.attempts
        );
        set_condition(
            &mut st.conditions,
            cond("Admitted", true, "Admitted", message.clone(), now),
        );
        let mut t = (*task).clone();
        t.status = Some(st.clone());
        out.event(&t, false, "Admitted", message);
        create_missing(&t, &[], st.attempts, placement, s.nodes).apply(st, out);
    }
    for (key, why) in &d.preempt {
        let Some((task, st)) = next.get_mut(key.as_str()) else {
            continue;
        };
        for p in s.pods.iter().filter(|p| belongs_to(p, task)) {
            out.delete(p);
        }
        st.phase = TaskPhase::Queued;
        st.pending_reason = Some(why.clone());
        st.queue_position = None;
        st.master_addr = None;
        st.replicas.clear();
        set_condition(
            &mut st.conditions,
            cond("Admitted", false, "Preempted", why.clone(), now),
        );
        let mut snapshot = (*task).clone();
        snapshot.status = Some(st.clone());
        out.event(&snapshot, true, "Preempted", why.clone());
    }
    for (key, w) in &d.waiting {
        let Some((_, st)) = next.get_mut(key.as_str()) else {
            continue;
        };
        if st.phase == TaskPhase::Queued {
            st.queue_position = Some(w.position);
            st.pending_reason = Some(w.reason.clone());
        }
    }
}

/// Each Queue's counts: tasks waiting, tasks admitted, GPUs they hold.
fn queue_statuses(s: &Snapshot, out: &mut Outcome) {
    for q in s.queues {
        let mut st = kumo_api::mltask::QueueStatus::default();
        for t in s.tasks.iter().filter(|t| t.spec.queue == q.metadata.name) {
            match t.status.as_ref().map(|s| s.phase).unwrap_or_default() {
                TaskPhase::Queued => st.pending += 1,
                TaskPhase::Admitted | TaskPhase::Running => {
                    st.running += 1;
                    // Saturating: a task stored before the bounds may ask for anything.
                    let gpus = t
                        .spec
                        .resources
                        .gpus
                        .saturating_mul(i64::from(t.spec.parallelism));
                    st.gpus_in_use = st.gpus_in_use.saturating_add(gpus);
                }
                _ => {}
            }
        }
        if q.status.as_ref() != Some(&st) {
            let mut q = q.clone();
            q.status = Some(st);
            out.actions.push(Action::QueueStatus(Box::new(q)));
        }
    }
}
