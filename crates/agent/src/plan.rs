//! The pure diff of a pod's desired state against its containers' actual state: what to do next.

use crate::backoff::backoff_delay;
use crate::model::{ContainerRuntimeState, PodRuntimeState, RunState, SyncParams};
use kumo_api::pod::RUNTIME_PROCESS;
use kumo_api::{Pod, RestartPolicy, Time};
use std::time::Duration;

pub use kumo_runtime::{runtime_class, DEFAULT_RUNTIME_CLASS};

/// One step towards the desired state.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start (or restart) container `container` (index in `spec.containers`).
    Start { container: usize },
    /// Stop container `container`: SIGTERM, then SIGKILL after `grace`.
    Kill { container: usize, grace: Duration },
    /// Container `container` will be restarted at `until`; come back then.
    WaitBackoff { container: usize, until: Time },
    /// Every container is stopped: write the final status and remove the pod.
    FinalizeDeletion,
}

/// Why this node cannot run the pod's runtime class, if it cannot.
pub fn runtime_class_problem(pod: &Pod, params: &SyncParams) -> Option<String> {
    let rc = runtime_class(pod);
    if params.runtime_classes.iter().any(|r| r == rc) {
        return None;
    }
    Some(format!(
        "runtime class {rc:?} is not available on node {} (available: {})",
        params.node_name,
        params.runtime_classes.join(", ")
    ))
}

/// Whether a pod runs as host processes.
pub fn is_process_pod(pod: &Pod) -> bool {
    runtime_class(pod) == RUNTIME_PROCESS
}

/// The grace period for stopping a pod being deleted.
pub fn deletion_grace(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .unwrap_or_else(|| pod.spec.grace_period_seconds());
    Duration::from_secs(secs.max(0) as u64)
}

/// Whether the restart policy restarts a container that exited with `exit_code`.
pub fn policy_restarts(policy: RestartPolicy, exit_code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0,
        RestartPolicy::Never => false,
    }
}

/// Whether this container, as it is now, will run again (never while the pod is being deleted).
pub fn will_restart(pod: &Pod, container: &ContainerRuntimeState) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    match &container.run {
        RunState::Running { .. } => false,
        RunState::Exited(t) => policy_restarts(pod.spec.restart_policy, t.exit_code),
    }
}

/// A run at least this long resets the restart back-off (as the kubelet's does: twice the
/// longest back-off).
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// How long an exited container waits before its restart: the doubling back-off, or the base
/// alone after a run of [`BACKOFF_RESET_AFTER`] or more.
pub fn restart_delay(container: &ContainerRuntimeState, base: Duration) -> Duration {
    let ran_long = container.terminated().is_some_and(|t| {
        t.started_at
            .zip(t.finished_at)
            .and_then(|(started, finished)| (finished - started).to_std().ok())
            .is_some_and(|ran| ran >= BACKOFF_RESET_AFTER)
    });
    let restarts = if ran_long { 0 } else { container.restart_count };
    backoff_delay(base, restarts)
}

/// When an exited container that will restart may be started again.
pub fn restart_at(container: &ContainerRuntimeState, base: Duration) -> Option<Time> {
    let t = container.terminated()?;
    let finished = t.finished_at?;
    let delay =
        chrono::Duration::from_std(restart_delay(container, base)).unwrap_or(chrono::Duration::MAX);
    Some(finished.checked_add_signed(delay).unwrap_or(finished))
}

/// What to do about `pod` given its containers' `actual` state at `now`.
pub fn plan(pod: &Pod, actual: &PodRuntimeState, now: Time, params: &SyncParams) -> Vec<Action> {
    let containers = &pod.spec.containers;
    if pod.metadata.deletion_timestamp.is_some() {
        let grace = deletion_grace(pod);
        let kills: Vec<Action> = containers
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                actual
                    .containers
                    .get(&c.name)
                    .is_some_and(|s| s.is_running())
            })
            .map(|(container, _)| Action::Kill { container, grace })
            .collect();
        if !actual.any_running() {
            return vec![Action::FinalizeDeletion];
        }
        return kills;
    }
    if runtime_class_problem(pod, params).is_some() {
        return Vec::new();
    }
    // A pod that already finished (by the API's record) is never started again, even when this
    // node lost its state.
    let terminal = pod.status.as_ref().is_some_and(|s| s.phase.is_terminal());
    if terminal && actual.is_empty() {
        return Vec::new();
    }
    let mut actions = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        match actual.containers.get(&c.name) {
            None => actions.push(Action::Start { container: i }),
            Some(state) if will_restart(pod, state) => {
                match restart_at(state, params.backoff_base) {
                    Some(until) if until > now => actions.push(Action::WaitBackoff {
                        container: i,
                        until,
                    }),
                    _ => actions.push(Action::Start { container: i }),
                }
            }
            Some(_) => {}
        }
    }
    actions
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
