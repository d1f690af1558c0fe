//! The rollout as data: an app's releases and pods at a time in, the writes out.

use super::*;
use chrono::TimeZone;
use kumo_api::app::{LABEL_PROCESS, LABEL_RELEASE};
use kumo_api::pod::PodStatus;
use kumo_api::{Condition, ConditionStatus, PodPhase};
use serde_json::json;

fn t(secs: i64) -> Time {
    chrono::Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn app(env: &str, replicas: i32) -> App {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
        "spec": {"runtimeClassName": "process",
                 "processes": {"web": {"command": ["./server"], "replicas": replicas}},
                 "env": {"V": env},
                 "deploy": {"drainSeconds": 5, "timeoutSeconds": 60}}
    }))
    .unwrap()
}

/// The release the controller would make for `app` after `prev`, created at `at`.
fn release_of(app: &App, prev: Option<&Release>, at: i64, phase: ReleasePhase) -> Release {
    let mut r = next_release(app, prev).expect("a release");
    r.metadata.creation_timestamp = Some(t(at));
    r.status = Some(ReleaseStatus {
        phase,
        message: None,
    });
    r
}

fn pod(name: &str, release: i64, ready: bool) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = name.into();
    p.metadata
        .labels
        .insert(LABEL_RELEASE.into(), release.to_string());
    p.metadata.labels.insert(LABEL_PROCESS.into(), "web".into());
    let status = if ready {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    p.status = Some(PodStatus {
        phase: PodPhase::Running,
        conditions: vec![Condition::new("Ready", status, None, None, t(0))],
        ..Default::default()
    });
    p
}

fn with_status(mut app: App, active: Option<i64>, draining: Option<Drain>) -> App {
    app.status = Some(AppStatus {
        active_release: active,
        draining,
        ..Default::default()
    });
    app
}

fn deleted(p: &Plan) -> Vec<&str> {
    let mut d: Vec<&str> = p.delete.iter().map(|(n, _)| n.as_str()).collect();
    d.sort();
    d
}

#[test]
fn a_new_app_gets_release_v1_then_its_replicas() {
    let a = app("1", 3);
    let p = plan(&a, &[], &[], t(0));
    let r = p.new_release.expect("v1");
    assert_eq!((r.metadata.name.as_str(), r.spec.version), ("web-v1", 1));
    assert_eq!(r.spec.description, "Initial release");
    assert!(p.create.is_empty());

    let v1 = release_of(&a, None, 0, ReleasePhase::Deploying);
    let p = plan(&a, std::slice::from_ref(&v1), &[pod("a", 1, true)], t(1));
    assert_eq!(p.new_release, None);
    assert_eq!(p.create.len(), 2, "three wanted, one there");
    assert_eq!(p.status.phase.as_deref(), Some("Deploying"));
    assert_eq!(
        p.status.message.as_deref(),
        Some("deploying v1: web 1/3 ready")
    );
    assert_eq!(p.status.active_release, None);
    assert_eq!(p.requeue_after, Some(Duration::from_secs(59)));
    let replica = &p.create[0];
    assert_eq!(
        replica.metadata.generate_name.as_deref(),
        Some("web-v1-web-")
    );
    assert_eq!(replica.metadata.annotations["kumo.dev/port"], "auto");
    assert!(replica.spec.containers[0].readiness_probe.is_some());
    assert!(replica.spec.containers[0]
        .env
        .iter()
        .any(|e| e.name == "V" && e.value == "1"));

    let pods = [pod("a", 1, true), pod("b", 1, true), pod("c", 1, true)];
    let p = plan(&a, &[v1], &pods, t(2));
    assert_eq!(p.status.active_release, Some(1));
    assert_eq!(p.status.phase.as_deref(), Some("Running"));
    let c = |t: &str| {
        let c = kumo_api::meta::find_condition(&p.status.conditions, t).unwrap();
        (c.status, c.reason.clone().unwrap_or_default())
    };
    assert_eq!(
        c("Available"),
        (ConditionStatus::True, "ReplicasReady".into())
    );
    assert_eq!(
        c("Progressing"),
        (ConditionStatus::True, "ReleaseActive".into())
    );
    assert_eq!(
        p.release_status,
        vec![(
            "web-v1".into(),
            ReleaseStatus {
                phase: ReleasePhase::Active,
                message: None
            }
        )]
    );
    assert!(p.create.is_empty() && p.delete.is_empty());
}

#[test]
fn blue_green_switches_when_all_are_ready_then_drains_the_old() {
    let a1 = app("1", 2);
    let v1 = release_of(&a1, None, 0, ReleasePhase::Active);
    let a2 = with_status(app("2", 2), Some(1), None);
    let p = plan(&a2, std::slice::from_ref(&v1), &[], t(10));
    let v2 = p.new_release.expect("a config change is a release");
    assert_eq!(v2.spec.description, "Set V");
    let v2 = release_of(&a2, Some(&v1), 10, ReleasePhase::Deploying);
    let releases = [v1, v2];

    // The new replicas start beside the old, which keep serving.
    let old = [pod("o1", 1, true), pod("o2", 1, true)];
    let p = plan(&a2, &releases, &old, t(11));
    assert_eq!(p.create.len(), 2);
    assert!(p
        .create
        .iter()
        .all(|c| c.metadata.labels[LABEL_RELEASE] == "2"));
    assert!(p.delete.is_empty());
    assert_eq!(p.status.active_release, Some(1));

    // One of two ready: no switch.
    let mut pods = old.to_vec();
    pods.extend([pod("n1", 2, true), pod("n2", 2, false)]);
    let p = plan(&a2, &releases, &pods, t(12));
    assert_eq!(p.status.active_release, Some(1));
    assert!(p.delete.is_empty() && p.create.is_empty());

    // All ready: switch in one step; the old are kept while they drain.
    pods[3] = pod("n2", 2, true);
    let p = plan(&a2, &releases, &pods, t(13));
    assert_eq!(p.status.active_release, Some(2));
    assert_eq!(
        p.status.draining,
        Some(Drain {
            release: 1,
            until: t(18)
        })
    );
    assert!(p.delete.is_empty());
    assert_eq!(p.requeue_after, Some(Duration::from_secs(5)));
    let phases: Vec<(&str, ReleasePhase)> = p
        .release_status
        .iter()
        .map(|(n, s)| (n.as_str(), s.phase))
        .collect();
    assert_eq!(
        phases,
        vec![
            ("web-v1", ReleasePhase::Superseded),
            ("web-v2", ReleasePhase::Active)
        ]
    );

    // Drained: the old replicas go.
    let a2 = with_status(a2, Some(2), p.status.draining.clone());
    let p = plan(&a2, &releases, &pods, t(17));
    assert!(p.delete.is_empty());
    let p = plan(&a2, &releases, &pods, t(18));
    assert_eq!(deleted(&p), vec!["o1", "o2"]);
    assert_eq!(p.status.draining, None);
}

#[test]
fn a_release_not_ready_in_time_is_abandoned_and_the_old_keeps_serving() {
    let a1 = app("1", 1);
    let v1 = release_of(&a1, None, 0, ReleasePhase::Active);
    let a2 = with_status(app("broken", 1), Some(1), None);
    let v2 = release_of(&a2, Some(&v1), 100, ReleasePhase::Deploying);
    let releases = [v1, v2];
    let pods = [pod("o1", 1, true), pod("n1", 2, false)];
    let p = plan(&a2, &releases, &pods, t(159));
    assert_eq!(p.status.phase.as_deref(), Some("Deploying"));
    assert!(p.delete.is_empty());
    let p = plan(&a2, &releases, &pods, t(160));
    assert_eq!(p.status.active_release, Some(1));
    assert_eq!(p.status.phase.as_deref(), Some("Abandoned"));
    let progressing = kumo_api::meta::find_condition(&p.status.conditions, "Progressing").unwrap();
    assert_eq!(progressing.status, ConditionStatus::False);
    assert_eq!(progressing.reason.as_deref(), Some("ReleaseAbandoned"));
    let why = "release v2 abandoned: its replicas were not all ready within 60s (web 0/1 ready); v1 keeps serving";
    assert_eq!(p.status.message.as_deref(), Some(why));
    assert_eq!(deleted(&p), vec!["n1"]);
    assert_eq!(
        p.release_status,
        vec![(
            "web-v2".into(),
            ReleaseStatus {
                phase: ReleasePhase::Abandoned,
                message: Some(why.into())
            }
        )]
    );
    assert!(p
        .events
        .iter()
        .any(|(ty, reason, _)| *ty == EventType::Warning && *reason == "ReleaseAbandoned"));

    // Later passes leave it abandoned, and do not retry it.
    let mut releases = releases.to_vec();
    releases[1].status = Some(ReleaseStatus {
        phase: ReleasePhase::Abandoned,
        message: Some(why.into()),
    });
    let p = plan(&a2, &releases, &[pod("o1", 1, true)], t(200));
    assert!(p.create.is_empty() && p.delete.is_empty() && p.new_release.is_none());
    assert_eq!(p.status.phase.as_deref(), Some("Abandoned"));
}

#[test]
fn scaling_is_not_a_release_and_dead_replicas_are_replaced() {
    let a = app("1", 3);
    let v1 = release_of(&a, None, 0, ReleasePhase::Active);
    let a = with_status(app("1", 1), Some(1), None);
    let pods = [pod("a", 1, true), pod("b", 1, false), pod("c", 1, true)];
    let p = plan(&a, std::slice::from_ref(&v1), &pods, t(5));
    assert!(p.new_release.is_none());
    assert_eq!(
        deleted(&p),
        vec!["b"],
        "the unready first, then the newest name"
    );
    // A serving replica leaves the router first and is deleted once drained.
    assert_eq!(p.drain, vec![("c".to_string(), t(10))]);
    let mut draining = pod("c", 1, true);
    draining
        .metadata
        .annotations
        .insert("kumo.dev/drain-until".into(), t(10).to_rfc3339());
    let pods = [pod("a", 1, true), draining];
    let p = plan(&a, std::slice::from_ref(&v1), &pods, t(9));
    assert!(p.delete.is_empty() && p.drain.is_empty() && p.create.is_empty());
    assert_eq!(p.requeue_after, Some(Duration::from_secs(1)));
    let p = plan(&a, std::slice::from_ref(&v1), &pods, t(10));
    assert_eq!(deleted(&p), vec!["c"]);

    let mut failed = pod("a", 1, false);
    failed.status.as_mut().unwrap().phase = PodPhase::Failed;
    let mut lost = pod("b", 1, true);
    lost.status.as_mut().unwrap().phase = PodPhase::Unknown;
    let a = with_status(app("1", 2), Some(1), None);
    let p = plan(&a, &[v1], &[failed, lost], t(5));
    assert_eq!(p.delete, vec![("a".to_string(), 10), ("b".to_string(), 0)]);
    assert_eq!(p.create.len(), 2);
}

#[test]
fn rolling_surges_one_replica_at_a_time() {
    let rolling = |env: &str| {
        let mut a = app(env, 3);
        a.spec.deploy.strategy = kumo_api::app::DeployStrategy::Rolling;
        a
    };
    let v1 = release_of(&rolling("1"), None, 0, ReleasePhase::Active);
    let a2 = with_status(rolling("2"), Some(1), None);
    let v2 = release_of(&a2, Some(&v1), 10, ReleasePhase::Deploying);
    let releases = [v1, v2];
    let old = vec![pod("o1", 1, true), pod("o2", 1, true), pod("o3", 1, true)];
    let created_and_deleted = |pods: &[Pod]| {
        let p = plan(&a2, &releases, pods, t(11));
        (
            p.create.len(),
            p.drain
                .iter()
                .map(|(n, _)| n.clone())
                .chain(deleted(&p).into_iter().map(String::from))
                .collect::<Vec<_>>(),
        )
    };
    // First one new replica, no old one removed.
    assert_eq!(created_and_deleted(&old), (1, vec![]));
    // While it starts, nothing more.
    let mut pods = old.clone();
    pods.push(pod("n1", 2, false));
    assert_eq!(created_and_deleted(&pods), (0, vec![]));
    // Ready: the next new one, and one old one drains out.
    pods[3] = pod("n1", 2, true);
    assert_eq!(created_and_deleted(&pods), (1, vec!["o3".to_string()]));
    // All new ready: switch, the rest drain.
    let pods = vec![
        pod("o1", 1, true),
        pod("n1", 2, true),
        pod("n2", 2, true),
        pod("n3", 2, true),
    ];
    let p = plan(&a2, &releases, &pods, t(12));
    assert_eq!(p.status.active_release, Some(2));
    assert!(p.delete.is_empty() && p.create.is_empty());
}

/// An app stored before its numbers were bounded (the issue's `timeoutSeconds:
/// 9000000000000000000`, i64::MAX seconds, i32::MAX replicas): the plan neither panics nor
/// acts on the overflow. A deadline past the calendar's end never comes; a drain and a replica
/// count are held to the API's bound.
#[test]
fn numbers_stored_before_their_bound_do_not_panic_the_plan() {
    let year = kumo_api::bounds::MAX_DURATION_SECONDS;
    for huge in [9_000_000_000_000_000_000, i64::MAX] {
        let mut a = app("1", i32::MAX);
        a.spec.deploy.timeout_seconds = Some(huge);
        a.spec.deploy.drain_seconds = Some(huge);
        let v1 = release_of(&a, None, 0, ReleasePhase::Deploying);
        // Deploying for ever: not abandoned, no wake-up for a deadline that never comes.
        let p = plan(&a, std::slice::from_ref(&v1), &[pod("a", 1, true)], t(10));
        assert_eq!(p.status.phase.as_deref(), Some("Deploying"), "{huge}");
        assert_eq!(p.requeue_after, None);
        assert_eq!(
            p.create.len(),
            kumo_api::bounds::MAX_REPLICAS as usize - 1,
            "replicas held to the bound"
        );

        // A switch drains the old release for at most the bound.
        let mut a = app("1", 1);
        a.spec.deploy.timeout_seconds = Some(huge);
        a.spec.deploy.drain_seconds = Some(huge);
        let v1 = release_of(&a, None, 0, ReleasePhase::Active);
        let mut a2 = app("2", 1);
        a2.spec.deploy = a.spec.deploy.clone();
        let v2 = release_of(&a2, Some(&v1), 5, ReleasePhase::Deploying);
        let a2 = with_status(a2, Some(1), None);
        let p = plan(
            &a2,
            &[v1.clone(), v2],
            &[pod("old", 1, true), pod("new", 2, true)],
            t(20),
        );
        assert_eq!(p.status.active_release, Some(2));
        assert_eq!(p.status.draining.map(|d| d.until), Some(t(20 + year)));

        // Scaling down drains a serving replica for at most the bound too.
        let a = with_status(a, Some(1), None);
        let p = plan(
            &a,
            std::slice::from_ref(&v1),
            &[pod("a", 1, true), pod("b", 1, true)],
            t(30),
        );
        assert_eq!(p.drain.len(), 1);
        assert_eq!(p.drain[0].1, t(30 + year));
        assert_eq!(p.requeue_after, Some(Duration::from_secs(year as u64)));
    }
}

#[test]
fn an_evicted_replica_goes_only_once_its_replacement_is_ready() {
    let a = app("1", 2);
    let v1 = release_of(&a, None, 0, ReleasePhase::Active);
    let a = with_status(a, Some(1), None);
    let evicted = |name: &str| {
        let mut p = pod(name, 1, true);
        p.metadata
            .annotations
            .insert(ANNOTATION_EVICTION_REQUESTED.into(), t(0).to_rfc3339());
        p
    };
    // Surge first: the evicted replica serves on, a replacement is made.
    let pods = [pod("a", 1, true), evicted("b")];
    let p = plan(&a, std::slice::from_ref(&v1), &pods, t(1));
    assert_eq!(p.create.len(), 1, "one replacement");
    assert!(p.delete.is_empty() && p.drain.is_empty(), "{p:?}");
    let available = kumo_api::meta::find_condition(&p.status.conditions, "Available").unwrap();
    assert_eq!(available.status, ConditionStatus::True, "b still serves");
    // The replacement starting: nothing more is made and b stays.
    let pods = [pod("a", 1, true), evicted("b"), pod("c", 1, false)];
    let p = plan(&a, std::slice::from_ref(&v1), &pods, t(2));
    assert!(p.create.is_empty() && p.delete.is_empty() && p.drain.is_empty());
    // The replacement Ready: b drains out of the router, then goes.
    let pods = [pod("a", 1, true), evicted("b"), pod("c", 1, true)];
    let p = plan(&a, std::slice::from_ref(&v1), &pods, t(3));
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(p.drain, vec![("b".to_string(), t(8))]);
    // An evicted replica that is not ready (not serving) goes at once when replaced.
    let mut starting = evicted("b");
    starting.status.as_mut().unwrap().conditions[0].status = ConditionStatus::False;
    let pods = [pod("a", 1, true), starting, pod("c", 1, true)];
    let p = plan(&a, std::slice::from_ref(&v1), &pods, t(3));
    assert_eq!(deleted(&p), vec!["b"]);
    assert!(p.drain.is_empty());
}
