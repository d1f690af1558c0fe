//! Tests of `pod_status` as data: phases, container states, conditions.

use super::*;
use crate::fixtures::{actual, dead, exited, params, pod, running, t};
use kumo_api::meta::find_condition;
use kumo_api::pod::{ContainerStateTerminated, ANNOTATION_GPU_DEVICES};
use kumo_api::RestartPolicy;

fn check_phase(policy: RestartPolicy, a: &PodRuntimeState, expected: PodPhase) {
    let p = pod(policy, &["a", "b"]);
    assert_eq!(
        pod_status(&p, a, t(1000), &params()).phase,
        expected,
        "{policy:?} {a:?}"
    );
}

#[test]
fn phase_follows_the_containers() {
    use RestartPolicy::*;
    let none = actual(&[]);
    let ok = || dead(0, exited(0, 0, 5));
    let bad = || dead(0, exited(1, 0, 5));
    for policy in [Always, OnFailure, Never] {
        check_phase(policy, &none, PodPhase::Pending);
        check_phase(
            policy,
            &actual(&[("a", running(0, 0)), ("b", ok())]),
            PodPhase::Running,
        );
    }
    check_phase(
        Never,
        &actual(&[("a", ok()), ("b", ok())]),
        PodPhase::Succeeded,
    );
    check_phase(
        Never,
        &actual(&[("a", ok()), ("b", bad())]),
        PodPhase::Failed,
    );
    check_phase(
        OnFailure,
        &actual(&[("a", ok()), ("b", ok())]),
        PodPhase::Succeeded,
    );
    check_phase(
        OnFailure,
        &actual(&[("a", ok()), ("b", bad())]),
        PodPhase::Running,
    );
    check_phase(
        Always,
        &actual(&[("a", ok()), ("b", ok())]),
        PodPhase::Running,
    );
}

#[test]
fn a_deleted_pod_ends_failed_or_succeeded() {
    let mut p = pod(RestartPolicy::Always, &["a"]);
    p.metadata.deletion_timestamp = Some(t(0));
    let killed = actual(&[("a", dead(0, exited(143, 0, 5)))]);
    assert_eq!(
        pod_status(&p, &killed, t(9), &params()).phase,
        PodPhase::Failed
    );
    let clean = actual(&[("a", dead(0, exited(0, 0, 5)))]);
    assert_eq!(
        pod_status(&p, &clean, t(9), &params()).phase,
        PodPhase::Succeeded
    );
}

#[test]
fn a_crash_looping_container_waits_with_its_last_exit_in_last_state() {
    let p = pod(RestartPolicy::Always, &["c"]);
    let term = exited(1, 10, 20);
    let s = pod_status(
        &p,
        &actual(&[("c", dead(1, term.clone()))]),
        t(25),
        &params(),
    );
    let cs = &s.container_statuses[0];
    let w = cs.state.waiting.as_ref().expect("waiting");
    assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(
        w.message.as_deref(),
        Some("back-off 20s restarting failed container=c pod=p")
    );
    assert_eq!(cs.last_state.terminated.as_ref(), Some(&term));
    assert_eq!(cs.restart_count, 1);
    assert!(!cs.ready);
    assert_eq!(s.phase, PodPhase::Running);
}

#[test]
fn running_and_terminated_container_states() {
    let p = pod(RestartPolicy::Never, &["a", "b"]);
    let mut a_state = running(2, 7);
    a_state.last_terminated = Some(exited(1, 1, 2));
    let s = pod_status(
        &p,
        &actual(&[("a", a_state), ("b", dead(0, exited(3, 1, 4)))]),
        t(10),
        &params(),
    );
    let a = &s.container_statuses[0];
    assert_eq!(
        a.state.running.as_ref().and_then(|r| r.started_at),
        Some(t(7))
    );
    assert_eq!(
        a.last_state.terminated.as_ref().map(|t| t.exit_code),
        Some(1)
    );
    assert!(a.ready);
    assert_eq!(a.restart_count, 2);
    assert_eq!(a.container_id.as_deref(), Some("process://100"));
    let b = &s.container_statuses[1];
    let term: &ContainerStateTerminated = b.state.terminated.as_ref().expect("terminated");
    assert_eq!((term.exit_code, term.reason.as_deref()), (3, Some("Error")));
    assert!(!b.ready);
    assert_eq!(s.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(s.pod_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(s.start_time, Some(t(10)));
}

#[test]
fn conditions_track_readiness_and_keep_foreign_ones() {
    let mut p = pod(RestartPolicy::Always, &["a"]);
    let scheduled = Condition::new("PodScheduled", ConditionStatus::True, None, None, t(0));
    p.status = Some(PodStatus {
        conditions: vec![scheduled.clone()],
        ..Default::default()
    });
    let s = pod_status(&p, &actual(&[]), t(1), &params());
    assert_eq!(
        find_condition(&s.conditions, "PodScheduled"),
        Some(&scheduled)
    );
    let ready = find_condition(&s.conditions, "Ready").expect("ready");
    assert_eq!(ready.status, ConditionStatus::False);
    assert_eq!(
        ready.message.as_deref(),
        Some("containers with unready status: [a]")
    );
    assert_eq!(
        find_condition(&s.conditions, "Initialized").map(|c| c.status),
        Some(ConditionStatus::True)
    );
    assert_eq!(
        s.container_statuses[0]
            .state
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref()),
        Some("ContainerCreating")
    );

    p.status = Some(s);
    let s2 = pod_status(&p, &actual(&[("a", running(0, 2))]), t(3), &params());
    let ready = find_condition(&s2.conditions, "Ready").expect("ready");
    assert_eq!(
        (ready.status, ready.last_transition_time),
        (ConditionStatus::True, Some(t(3)))
    );
    assert_eq!(s2.start_time, Some(t(1)), "start time is kept");

    // Recomputing at a later time with nothing changed gives the same status: no write.
    p.status = Some(s2.clone());
    assert_eq!(
        pod_status(&p, &actual(&[("a", running(0, 2))]), t(50), &params()),
        s2
    );
}

#[test]
fn unavailable_runtime_class_is_a_clear_pending_status() {
    let mut p = pod(RestartPolicy::Always, &["a"]);
    p.spec.runtime_class_name = Some("runc".into());
    let s = pod_status(&p, &actual(&[]), t(0), &params());
    let msg = "runtime class \"runc\" is not available on node n1 (available: process)";
    assert_eq!(s.phase, PodPhase::Pending);
    assert_eq!(s.reason.as_deref(), Some("RuntimeClassNotFound"));
    let w = s.container_statuses[0]
        .state
        .waiting
        .as_ref()
        .expect("waiting");
    assert_eq!(
        (w.reason.as_deref(), w.message.as_deref()),
        (Some("RuntimeClassNotFound"), Some(msg))
    );
    let ready = find_condition(&s.conditions, "Ready").expect("ready");
    assert_eq!(ready.message.as_deref(), Some(msg));
}

#[test]
fn oci_pods_show_waiting_reasons_and_their_own_ip() {
    let mut p = pod(RestartPolicy::Always, &["a", "b"]);
    p.spec.runtime_class_name = Some("runc".into());
    let mut params = params();
    params.runtime_classes = vec!["runc".into(), "process".into()];
    let mut a = actual(&[]);
    a.waiting.insert(
        "a".into(),
        crate::model::Waiting {
            reason: "ErrImagePull".into(),
            message: Some("manifest unknown".into()),
        },
    );
    let status = pod_status(&p, &a, t(1), &params);
    let w = |i: usize| {
        status.container_statuses[i]
            .state
            .waiting
            .clone()
            .expect("waiting")
    };
    assert_eq!(
        (w(0).reason.as_deref(), w(0).message.as_deref()),
        (Some("ErrImagePull"), Some("manifest unknown"))
    );
    assert_eq!(w(1).reason.as_deref(), Some("ContainerCreating"));
    assert_eq!(status.phase, PodPhase::Pending);
    // No pod network yet: no pod IP (a process pod has the host's).
    assert_eq!(status.pod_ip, None);
    a.pod_ip = Some("10.88.0.7".into());
    assert_eq!(
        pod_status(&p, &a, t(1), &params).pod_ip.as_deref(),
        Some("10.88.0.7")
    );
    p.spec.runtime_class_name = Some("process".into());
    assert_eq!(
        pod_status(&p, &a, t(1), &params).pod_ip.as_deref(),
        Some("127.0.0.1")
    );
}

#[test]
fn allocated_gpus_are_in_the_container_statuses() {
    let mut p = pod(RestartPolicy::Never, &["a", "b"]);
    p.metadata
        .annotations
        .insert(ANNOTATION_GPU_DEVICES.into(), "a=1,3".into());
    let s = pod_status(&p, &actual(&[("a", running(0, 0))]), t(1000), &params());
    let a = &s.container_statuses[0].allocated_resources_status;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].name, "nvidia.com/gpu");
    let ids: Vec<&str> = a[0]
        .resources
        .iter()
        .map(|r| r.resource_id.as_str())
        .collect();
    assert_eq!(ids, ["1", "3"]);
    // Also while it waits to start; none for a container without devices.
    assert_eq!(
        pod_status(&p, &actual(&[]), t(1000), &params()).container_statuses[0]
            .allocated_resources_status,
        s.container_statuses[0].allocated_resources_status
    );
    assert!(s.container_statuses[1]
        .allocated_resources_status
        .is_empty());
    let json = serde_json::to_value(&s.container_statuses[0]).unwrap();
    assert_eq!(
        json["allocatedResourcesStatus"],
        serde_json::json!([{"name": "nvidia.com/gpu", "resources": [{"resourceID": "1"}, {"resourceID": "3"}]}])
    );
}
