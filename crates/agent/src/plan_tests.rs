//! Tests of `plan` as data: pod + actual state + clock in, actions out.

use super::*;
use crate::fixtures::{actual, dead, exited, params, pod, running, t};
use crate::model::PodRuntimeState;
use kumo_api::pod::PodStatus;
use kumo_api::{PodPhase, RestartPolicy};

fn check(pod: &Pod, actual: &PodRuntimeState, now: Time, expected: Vec<Action>) {
    assert_eq!(plan(pod, actual, now, &params()), expected);
}

#[test]
fn a_new_pod_starts_its_containers_in_order() {
    let p = pod(RestartPolicy::Always, &["a", "b"]);
    check(
        &p,
        &PodRuntimeState::default(),
        t(0),
        vec![
            Action::Start { container: 0 },
            Action::Start { container: 1 },
        ],
    );
}

#[test]
fn running_containers_need_nothing() {
    let p = pod(RestartPolicy::Always, &["a", "b"]);
    check(
        &p,
        &actual(&[("a", running(0, 0)), ("b", running(3, 0))]),
        t(50),
        vec![],
    );
}

#[test]
fn restart_policy_decides_which_exits_restart() {
    use RestartPolicy::*;
    let table = [
        (Always, 0, true),
        (Always, 1, true),
        (OnFailure, 0, false),
        (OnFailure, 1, true),
        (Never, 0, false),
        (Never, 1, false),
    ];
    for (policy, code, restarts) in table {
        let p = pod(policy, &["a"]);
        let a = actual(&[("a", dead(0, exited(code, 0, 5)))]);
        let expected = if restarts {
            vec![Action::Start { container: 0 }]
        } else {
            vec![]
        };
        assert_eq!(
            plan(&p, &a, t(100), &params()),
            expected,
            "{policy:?} exit {code}"
        );
    }
}

#[test]
fn a_restart_waits_out_a_doubling_back_off() {
    let p = pod(RestartPolicy::Always, &["a"]);
    // (restarts so far, now) -> restart time; the exit was at t(100), base 10 s.
    for (restarts, until) in [(0, 110), (1, 120), (2, 140), (4, 260), (5, 400), (9, 400)] {
        let a = actual(&[("a", dead(restarts, exited(1, 90, 100)))]);
        check(
            &p,
            &a,
            t(101),
            vec![Action::WaitBackoff {
                container: 0,
                until: t(until),
            }],
        );
        check(&p, &a, t(until), vec![Action::Start { container: 0 }]);
    }
}

#[test]
fn a_run_of_ten_minutes_resets_the_back_off() {
    let p = pod(RestartPolicy::Always, &["a"]);
    // Five restarts before, but the last run lasted 600 s: the next waits the base 10 s only.
    let a = actual(&[("a", dead(5, exited(1, 100, 700)))]);
    check(
        &p,
        &a,
        t(701),
        vec![Action::WaitBackoff {
            container: 0,
            until: t(710),
        }],
    );
    // A run just short of that keeps the doubled (capped) back-off.
    let a = actual(&[("a", dead(5, exited(1, 101, 700)))]);
    check(
        &p,
        &a,
        t(701),
        vec![Action::WaitBackoff {
            container: 0,
            until: t(1000),
        }],
    );
}

#[test]
fn only_the_exited_container_of_several_restarts() {
    let p = pod(RestartPolicy::OnFailure, &["a", "b", "c"]);
    let a = actual(&[
        ("a", dead(0, exited(0, 0, 5))),
        ("b", running(0, 0)),
        ("c", dead(2, exited(2, 0, 5))),
    ]);
    check(&p, &a, t(100), vec![Action::Start { container: 2 }]);
}

#[test]
fn deletion_kills_running_containers_then_finalizes() {
    let mut p = pod(RestartPolicy::Always, &["a", "b"]);
    p.metadata.deletion_timestamp = Some(t(0));
    let a = actual(&[("a", running(0, 0)), ("b", dead(0, exited(1, 0, 5)))]);
    check(
        &p,
        &a,
        t(10),
        vec![Action::Kill {
            container: 0,
            grace: Duration::from_secs(30),
        }],
    );

    p.metadata.deletion_grace_period_seconds = Some(5);
    check(
        &p,
        &a,
        t(10),
        vec![Action::Kill {
            container: 0,
            grace: Duration::from_secs(5),
        }],
    );

    // Stopped containers are not restarted while the pod is being deleted.
    let stopped = actual(&[
        ("a", dead(0, exited(143, 0, 11))),
        ("b", dead(0, exited(1, 0, 5))),
    ]);
    check(&p, &stopped, t(100), vec![Action::FinalizeDeletion]);
    // A pod deleted before it ever ran is finalized at once.
    check(
        &p,
        &PodRuntimeState::default(),
        t(1),
        vec![Action::FinalizeDeletion],
    );
}

#[test]
fn unavailable_runtime_class_starts_nothing() {
    let mut p = pod(RestartPolicy::Always, &["a"]);
    p.spec.runtime_class_name = Some("runc".into());
    check(&p, &PodRuntimeState::default(), t(0), vec![]);
    p.spec.runtime_class_name = None;
    check(&p, &PodRuntimeState::default(), t(0), vec![]);
    assert_eq!(
        runtime_class_problem(&p, &params()).as_deref(),
        Some("runtime class \"runc\" is not available on node n1 (available: process)")
    );
}

#[test]
fn a_finished_pod_is_not_rerun_after_losing_local_state() {
    let mut p = pod(RestartPolicy::Never, &["a"]);
    p.status = Some(PodStatus {
        phase: PodPhase::Succeeded,
        ..Default::default()
    });
    check(&p, &PodRuntimeState::default(), t(0), vec![]);
}

/// Numbers at their extremes (a grace period of i64::MAX seconds stored before any bound, an
/// exit stamped at the calendar's end, i32::MAX restarts): the plan neither panics nor
/// restarts early.
#[test]
fn extreme_numbers_do_not_panic_the_plan() {
    let mut deleting = pod(RestartPolicy::Always, &["a"]);
    deleting.metadata.deletion_timestamp = Some(t(0));
    deleting.metadata.deletion_grace_period_seconds = Some(i64::MAX);
    check(
        &deleting,
        &actual(&[("a", running(0, 0))]),
        t(1),
        vec![Action::Kill {
            container: 0,
            grace: Duration::from_secs(i64::MAX as u64),
        }],
    );
    let late = kumo_api::pod::ContainerStateTerminated {
        finished_at: Some(Time::MAX_UTC),
        ..exited(1, 0, 0)
    };
    let p = pod(RestartPolicy::Always, &["a"]);
    check(
        &p,
        &actual(&[("a", dead(i32::MAX, late))]),
        t(1),
        vec![Action::WaitBackoff {
            container: 0,
            until: Time::MAX_UTC,
        }],
    );
    check(
        &p,
        &actual(&[("a", dead(i32::MAX, exited(1, 0, 5)))]),
        t(5),
        vec![Action::WaitBackoff {
            container: 0,
            until: t(5 + 300),
        }],
    );
}
