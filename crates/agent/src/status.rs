//! The pure computation of a pod's status (phase, conditions, container states) from actual state.

use crate::backoff::format_duration;
use crate::model::{ContainerRuntimeState, PodRuntimeState, RunState, SyncParams};
use crate::plan::{is_process_pod, runtime_class_problem, will_restart};
use kumo_api::meta::set_condition;
use kumo_api::pod::{
    ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus, PodStatus,
    ResourceHealth, ResourceStatus,
};
use kumo_api::{Condition, ConditionStatus, Pod, PodPhase, Time, GPU_RESOURCE};

/// Waiting reason of a container that has not been started yet.
pub const REASON_CREATING: &str = "ContainerCreating";
/// Waiting reason of a container waiting out its restart back-off.
pub const REASON_BACKOFF: &str = "CrashLoopBackOff";
/// Waiting reason (and pod reason) when the node cannot run the pod's runtime class.
pub const REASON_NO_RUNTIME: &str = "RuntimeClassNotFound";

/// The status `pod` should have, given its containers' `actual` state at `now`.
///
/// Conditions owned by other components (`PodScheduled`) and `startTime` are kept from the
/// pod's current status; a condition's transition time changes only when its status does.
pub fn pod_status(
    pod: &Pod,
    actual: &PodRuntimeState,
    now: Time,
    params: &SyncParams,
) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let mut status = PodStatus {
        phase: PodPhase::Pending,
        conditions: old.conditions,
        message: None,
        reason: None,
        host_ip: Some(params.host_ip.clone()),
        pod_ip: if is_process_pod(pod) {
            Some(params.host_ip.clone())
        } else {
            actual.pod_ip.clone()
        },
        start_time: old.start_time.or(Some(now)),
        container_statuses: Vec::new(),
    };
    if let Some(problem) = runtime_class_problem(pod, params) {
        status.container_statuses = pod
            .spec
            .containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                state: waiting(REASON_NO_RUNTIME, Some(problem.clone())),
                image: c.image.clone(),
                ..Default::default()
            })
            .collect();
        status.pod_ip = None;
        status.reason = Some(REASON_NO_RUNTIME.to_string());
        status.message = Some(problem.clone());
        let c = &mut status.conditions;
        set_condition(c, cond("Initialized", true, None, None, now));
        for t in ["ContainersReady", "Ready"] {
            set_condition(
                c,
                cond(
                    t,
                    false,
                    Some(REASON_NO_RUNTIME),
                    Some(problem.clone()),
                    now,
                ),
            );
        }
        return status;
    }

    // The allocator's record (written before the first container starts).
    let gpus = crate::gpu_alloc::recorded(pod);
    status.container_statuses = pod
        .spec
        .containers
        .iter()
        .map(|c| {
            let mut cs = match actual.containers.get(&c.name) {
                None => ContainerStatus {
                    name: c.name.clone(),
                    state: match actual.waiting.get(&c.name) {
                        Some(w) => waiting(&w.reason, w.message.clone()),
                        None => waiting(REASON_CREATING, None),
                    },
                    ..Default::default()
                },
                Some(state) => container_status(pod, &c.name, state, params),
            };
            // A container with a readiness probe is ready only once its current run passed it.
            if c.readiness_probe.is_some() && !actual.probes_passed.contains(&c.name) {
                cs.ready = false;
            }
            cs.image = c.image.clone();
            if let Some(ids) = gpus.as_ref().and_then(|a| a.get(&c.name)) {
                cs.allocated_resources_status = vec![ResourceStatus {
                    name: GPU_RESOURCE.to_string(),
                    resources: ids
                        .iter()
                        .map(|i| ResourceHealth {
                            resource_id: i.to_string(),
                        })
                        .collect(),
                }];
            }
            cs
        })
        .collect();
    status.phase = phase(pod, actual);

    let not_ready: Vec<&str> = status
        .container_statuses
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let conds = &mut status.conditions;
    set_condition(conds, cond("Initialized", true, None, None, now));
    let (reason, message) = if status.phase.is_terminal() {
        (Some("PodCompleted"), None)
    } else if not_ready.is_empty() {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                not_ready.join(" ")
            )),
        )
    };
    let ready = not_ready.is_empty() && !status.phase.is_terminal();
    for t in ["ContainersReady", "Ready"] {
        set_condition(conds, cond(t, ready, reason, message.clone(), now));
    }
    status
}

/// The status of one container that has run at least once.
fn container_status(
    pod: &Pod,
    name: &str,
    state: &ContainerRuntimeState,
    params: &SyncParams,
) -> ContainerStatus {
    let mut cs = ContainerStatus {
        name: name.to_string(),
        restart_count: state.restart_count,
        container_id: state.id.clone(),
        ..Default::default()
    };
    match &state.run {
        RunState::Running { started_at } => {
            cs.state.running = Some(ContainerStateRunning {
                started_at: Some(*started_at),
            });
            cs.ready = true;
            cs.last_state = terminated_state(state.last_terminated.clone());
        }
        RunState::Exited(t) if will_restart(pod, state) => {
            let delay = crate::plan::restart_delay(state, params.backoff_base);
            cs.state = waiting(
                REASON_BACKOFF,
                Some(format!(
                    "back-off {} restarting failed container={name} pod={}",
                    format_duration(delay),
                    pod.metadata.name
                )),
            );
            cs.last_state = terminated_state(Some(t.clone()));
        }
        RunState::Exited(t) => {
            cs.state = terminated_state(Some(t.clone()));
            cs.last_state = terminated_state(state.last_terminated.clone());
        }
    }
    cs
}

/// The pod phase: Pending until a container started; Running while one runs or will restart;
/// then Succeeded (all exited 0) or Failed.
pub fn phase(pod: &Pod, actual: &PodRuntimeState) -> PodPhase {
    let containers = &pod.spec.containers;
    let states: Vec<Option<&ContainerRuntimeState>> = containers
        .iter()
        .map(|c| actual.containers.get(&c.name))
        .collect();
    if containers.is_empty() || states.iter().all(Option::is_none) {
        return PodPhase::Pending;
    }
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let active = states.iter().any(|s| match s {
        None => !deleting,
        Some(s) => s.is_running() || will_restart(pod, s),
    });
    if active {
        return PodPhase::Running;
    }
    let all_zero = states.iter().all(|s| {
        s.and_then(|s| s.terminated())
            .is_some_and(|t| t.exit_code == 0)
    });
    if all_zero {
        PodPhase::Succeeded
    } else {
        PodPhase::Failed
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    }
}

fn terminated_state(t: Option<kumo_api::pod::ContainerStateTerminated>) -> ContainerState {
    ContainerState {
        terminated: t,
        ..Default::default()
    }
}

fn cond(
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Time,
) -> Condition {
    let status = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    Condition::new(type_, status, reason, message, now)
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
