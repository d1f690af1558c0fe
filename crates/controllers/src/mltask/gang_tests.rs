//! The gang's phases as data: what each phase function decides from a task, its pods and the
//! time (the pass applies it; `pass_tests` checks the whole).

use super::*;
use chrono::TimeZone;
use serde_json::json;

fn t(secs: i64) -> Time {
    chrono::Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn task(extra: serde_json::Value) -> MLTask {
    let mut spec = json!({"runtimeClassName": "process", "command": ["x"], "parallelism": 2,
                          "resources": {"gpus": 1}, "maxRetries": 1});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "kumo.dev/v1", "kind": "MLTask",
        "metadata": {"name": "train", "namespace": "default", "creationTimestamp": t(0)},
        "spec": spec
    }))
    .unwrap()
}

fn pod(task: &MLTask, rank: usize, phase: PodPhase) -> Pod {
    let mut p = replica_pod(task, rank, Some("n1"), "127.0.0.1", 1);
    p.status = Some(kumo_api::pod::PodStatus {
        phase,
        ..Default::default()
    });
    p
}

fn input<'s>(
    task: &'s MLTask,
    mine: &'s [&'s Pod],
    datasets: Option<&'s BTreeSet<String>>,
) -> StepInput<'s, 's> {
    StepInput {
        task,
        key: "default/train",
        mine,
        nodes: &[],
        datasets,
        now: t(100),
        backoff_base: Duration::from_secs(10),
    }
}

#[test]
fn queued() {
    let plain = task(json!({}));
    let with_data = task(json!({"data": {"dataset": "mnist"}}));
    let running = pod(&plain, 0, PodPhase::Running);
    let failed = pod(&plain, 1, PodPhase::Failed);
    let mnist: BTreeSet<String> = ["mnist".to_string()].into();
    let none = BTreeSet::new();
    let previous = [&running, &failed];
    let retry = |at| MLTaskStatus {
        retry_at: at,
        ..Default::default()
    };
    let no_data = |reason: &str| Queued::NoDataset {
        reason: reason.to_string(),
    };
    let cases: Vec<(&str, StepInput, MLTaskStatus, Queued)> = vec![
        ("ready", input(&plain, &[], None), retry(None), Queued::Pending),
        (
            "backing off",
            input(&plain, &[], None),
            retry(Some(t(130))),
            Queued::BackingOff { until: t(130) },
        ),
        ("back-off over", input(&plain, &[], None), retry(Some(t(100))), Queued::Pending),
        ("dataset there", input(&with_data, &[], Some(&mnist)), retry(None), Queued::Pending),
        (
            "dataset missing",
            input(&with_data, &[], Some(&none)),
            retry(None),
            no_data("spec.data.dataset: dataset \"mnist\" does not exist (push it with `kumo dataset push DIR mnist`)"),
        ),
        (
            "datasets unknown",
            input(&with_data, &[], None),
            retry(None),
            no_data("spec.data.dataset: cannot tell whether dataset \"mnist\" exists (the server did not list datasets)"),
        ),
        (
            "previous attempt's pods first",
            input(&with_data, &previous, None),
            retry(Some(t(130))),
            Queued::ClearPrevious {
                holding: vec![&running],
            },
        ),
    ];
    for (name, input, status, expected) in cases {
        assert_eq!(super::queued(&input, &status), expected, "{name}");
    }
}

#[test]
fn deadline() {
    let plain = task(json!({"activeDeadlineSeconds": 60}));
    let passed = Deadline::Passed {
        message: "ran longer than activeDeadlineSeconds (60s)".into(),
    };
    let cases = [
        (None, None),
        (Some(t(101)), Some(Deadline::Later(t(101)))),
        (Some(t(100)), Some(passed)),
    ];
    for (ends_by, expected) in cases {
        assert_eq!(
            super::deadline(&input(&plain, &[], None), ends_by),
            expected,
            "{ends_by:?}"
        );
    }
}

#[test]
fn ended() {
    let plain = task(json!({}));
    let ok = |rank| pod(&plain, rank, PodPhase::Succeeded);
    let run = |rank| pod(&plain, rank, PodPhase::Running);
    let bad = |rank| {
        let mut p = pod(&plain, rank, PodPhase::Failed);
        p.status.as_mut().unwrap().reason = Some("Evicted".into());
        p
    };
    let seen = |rank: i32| ReplicaStatus {
        rank,
        phase: Some(PodPhase::Running),
        ..Default::default()
    };
    let failed = |rank, why: &str| {
        Some(Ended::Failed {
            rank,
            why: why.into(),
        })
    };
    /// Name, the pods, the replicas the status saw, what `ended` says.
    type Case = (&'static str, Vec<Pod>, Vec<ReplicaStatus>, Option<Ended>);
    let cases: Vec<Case> = vec![
        (
            "all exited 0",
            vec![ok(0), ok(1)],
            vec![],
            Some(Ended::Succeeded),
        ),
        ("one still runs", vec![ok(0), run(1)], vec![], None),
        ("not all created", vec![ok(0)], vec![], None),
        (
            "a failure",
            vec![run(0), bad(1)],
            vec![],
            failed(1, "Evicted"),
        ),
        (
            "a pod seen before is gone",
            vec![run(0)],
            vec![seen(0), seen(1)],
            failed(1, "its pod was deleted"),
        ),
        (
            "the lowest rank is told",
            vec![bad(1)],
            vec![seen(0)],
            failed(0, "its pod was deleted"),
        ),
    ];
    for (name, pods, replicas, expected) in cases {
        let mine: Vec<&Pod> = pods.iter().collect();
        assert_eq!(super::ended(&mine, &replicas, 2), expected, "{name}");
    }
}

#[test]
fn after_failure() {
    let plain = task(json!({"maxRetries": 2}));
    let cases = [
        (
            1,
            AfterFailure::Restart {
                attempts: 2,
                at: t(110),
                message: "replica 1 failed (exit code 3): restarting the whole gang as attempt 2 of 3 after a 10s back-off".into(),
            },
        ),
        (
            2,
            AfterFailure::Restart {
                attempts: 3,
                at: t(120),
                message: "replica 1 failed (exit code 3): restarting the whole gang as attempt 3 of 3 after a 20s back-off".into(),
            },
        ),
        (
            3,
            AfterFailure::GiveUp {
                message: "replica 1 failed (exit code 3) on attempt 3 of 3; no retries left".into(),
            },
        ),
    ];
    for (attempts, expected) in cases {
        let got = super::after_failure(&input(&plain, &[], None), attempts, 1, "exit code 3");
        assert_eq!(got, expected, "attempt {attempts}");
    }
}

#[test]
fn replica_statuses_read_the_gpu_devices_record() {
    let plain = task(json!({}));
    let cases = [
        ("main=0,1", vec!["0", "1"]),
        ("main=3;side=2", vec!["3", "2"]),
        ("main=", vec![]),
        // Not a record: no devices rather than a guess.
        ("main=x", vec![]),
    ];
    for (record, expected) in cases {
        let mut p = pod(&plain, 0, PodPhase::Running);
        p.metadata
            .annotations
            .insert(ANNOTATION_GPU_DEVICES.into(), record.into());
        let got = replica_statuses(&plain, &["n1".to_string()], &[&p]);
        assert_eq!(got[0].gpus, expected, "{record}");
    }
}
