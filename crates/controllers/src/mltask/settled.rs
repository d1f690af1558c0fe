//! What a pass may leave out: a task that has ended (Succeeded, Failed, Cancelled) and whose
//! replicas hold nothing any more has nothing left for a pass to do, and neither have those
//! replicas. Pure.
//!
//! Ended tasks and their pods stay in the API (for their logs and history), so without this a
//! pass would clone and look at every task and pod a cluster ever ran: a batch of 1,000 short
//! tasks made the last pass a thousand times the work of the first.

use super::outcome::holds;
use super::pass::task_key;
use kumo_api::keys::LABEL_TASK;
use kumo_api::{MLTask, Pod};
use std::collections::HashMap;

/// The ended tasks, by key, with their uid (to tell their replicas from a namesake's).
pub type Finished = HashMap<String, Option<String>>;

/// Whether the task has ended for good.
pub fn finished(task: &MLTask) -> bool {
    task.status.as_ref().is_some_and(|s| s.phase.is_finished())
}

/// The key and uid of `task` when it has ended.
pub fn finished_entry(task: &MLTask) -> Option<(String, Option<String>)> {
    finished(task).then(|| (task_key(task), task.metadata.uid.clone()))
}

/// Whether a pass needs to see `pod`: it holds node resources (admission counts them, and an
/// ended task's running replica is stopped), or it is a replica of a task that has not ended
/// (its phase moves that task along), or of no task the pass could leave out (it may have to be
/// deleted). An ended pod of no task at all plays no part.
pub fn pod_needed(pod: &Pod, finished: &Finished) -> bool {
    if holds(pod) {
        return true;
    }
    let Some(task) = pod.metadata.labels.get(LABEL_TASK) else {
        return false;
    };
    let key = format!("{}/{task}", pod.metadata.ns());
    match finished.get(&key) {
        // A replica of the ended task itself (same owner uid when both have one) is left out.
        Some(uid) => {
            let owner = pod.metadata.owner_references.first().map(|o| &o.uid);
            matches!((uid, owner), (Some(u), Some(o)) if u != o)
        }
        None => true,
    }
}

/// [`pod_needed`] in a pass that has `any_task` (one not ended) to move along or admit. Without
/// one, a pod that is no task's replica plays no part (it counts only in admission's node
/// views), so on a cluster without MLTasks a pass clones none of its pods: the density
/// benchmark (`bench/density.py`) found the passes cloning every pod on every pod change.
pub fn pod_needed_with(pod: &Pod, finished: &Finished, any_task: bool) -> bool {
    (any_task || pod.metadata.labels.contains_key(LABEL_TASK)) && pod_needed(pod, finished)
}

/// The ended tasks named by `pods` that still hold resources: the pass stops those pods, so it
/// needs these tasks even though they ended.
pub fn tasks_of_holding(pods: &[Pod], finished: &Finished) -> Vec<String> {
    let mut keys: Vec<String> = pods
        .iter()
        .filter(|p| holds(p))
        .filter_map(|p| {
            let task = p.metadata.labels.get(LABEL_TASK)?;
            let key = format!("{}/{task}", p.metadata.ns());
            finished.contains_key(&key).then_some(key)
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
