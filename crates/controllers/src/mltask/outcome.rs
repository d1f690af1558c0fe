//! What a pass decides, shared by the pass and the per-task gang steps (both import it, neither
//! imports the other's caller): the writes it asks for and a few readings of a replica pod.

use super::replicas::GRACE_SECONDS;
use kumo_api::{Condition, ConditionStatus, MLTask, Pod, PodPhase, Queue, Time};

/// One write the pass asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Replace the task's status with this one.
    Status(Box<MLTask>),
    CreatePod(Box<Pod>),
    /// Delete a pod gracefully.
    DeletePod {
        namespace: String,
        name: String,
        grace_seconds: i64,
    },
    Event {
        task: Box<MLTask>,
        warning: bool,
        reason: &'static str,
        message: String,
    },
    QueueStatus(Box<Queue>),
}

/// The pass's writes and when to look again at the latest (back-offs ending, deadlines).
#[derive(Debug, Default)]
pub struct Outcome {
    pub actions: Vec<Action>,
    pub next_at: Option<Time>,
    /// Tasks whose step panicked, with the panic's message: this pass wrote nothing for them
    /// and decided for the others (the loop logs, counts and retries them).
    pub failed: Vec<(String, String)>,
}

impl Outcome {
    pub(super) fn wake_at(&mut self, t: Time) {
        self.next_at = Some(self.next_at.map_or(t, |n| n.min(t)));
    }

    pub(super) fn event(
        &mut self,
        task: &MLTask,
        warning: bool,
        reason: &'static str,
        message: String,
    ) {
        self.actions.push(Action::Event {
            task: Box::new(task.clone()),
            warning,
            reason,
            message,
        });
    }

    pub(super) fn delete(&mut self, pod: &Pod) {
        // A pod whose node was lost has no agent left to stop it gracefully: it goes at once
        // (even when a graceful delete was asked before its node was lost).
        let lost = phase(pod) == PodPhase::Unknown;
        if pod.metadata.deletion_timestamp.is_none() || lost {
            self.actions.push(Action::DeletePod {
                namespace: pod.metadata.ns().to_string(),
                name: pod.metadata.name.clone(),
                grace_seconds: if lost { 0 } else { GRACE_SECONDS },
            });
        }
    }
}

pub(super) fn phase(pod: &Pod) -> PodPhase {
    pod.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// Whether a pod still holds its node's resources (it has not ended).
pub(super) fn holds(pod: &Pod) -> bool {
    !phase(pod).is_terminal()
}

pub(super) fn cond(type_: &str, ok: bool, reason: &str, message: String, now: Time) -> Condition {
    let status = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    Condition::new(type_, status, Some(reason), Some(message), now)
}
