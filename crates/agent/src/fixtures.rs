//! Test fixtures: pods and container states built as data.

use crate::model::{ContainerRuntimeState, PodRuntimeState, RunState, SyncParams};
use chrono::TimeZone;
use kumo_api::pod::{Container, ContainerStateTerminated, PodSpec};
use kumo_api::{ObjectMeta, Pod, RestartPolicy, Time};
use std::time::Duration;

/// A fixed instant plus `secs` seconds.
pub fn t(secs: i64) -> Time {
    chrono::Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
        + chrono::Duration::seconds(secs)
}

pub fn params() -> SyncParams {
    SyncParams {
        node_name: "n1".into(),
        host_ip: "127.0.0.1".into(),
        runtime_classes: vec!["process".into()],
        backoff_base: Duration::from_secs(10),
    }
}

/// A process pod `p` with containers named `names`.
pub fn pod(policy: RestartPolicy, names: &[&str]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: "p".into(),
            namespace: Some("default".into()),
            uid: Some("uid-1".into()),
            ..Default::default()
        },
        spec: PodSpec {
            containers: names
                .iter()
                .map(|n| Container {
                    name: n.to_string(),
                    command: vec!["sleep".into(), "100".into()],
                    ..Default::default()
                })
                .collect(),
            restart_policy: policy,
            node_name: Some("n1".into()),
            runtime_class_name: Some("process".into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn exited(code: i32, started: i64, finished: i64) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: code,
        reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
        started_at: Some(t(started)),
        finished_at: Some(t(finished)),
        ..Default::default()
    }
}

pub fn running(restarts: i32, started: i64) -> ContainerRuntimeState {
    ContainerRuntimeState {
        restart_count: restarts,
        run: RunState::Running {
            started_at: t(started),
        },
        last_terminated: None,
        id: Some("process://100".into()),
    }
}

pub fn dead(restarts: i32, term: ContainerStateTerminated) -> ContainerRuntimeState {
    ContainerRuntimeState {
        restart_count: restarts,
        run: RunState::Exited(term),
        last_terminated: None,
        id: Some("process://100".into()),
    }
}

pub fn actual(states: &[(&str, ContainerRuntimeState)]) -> PodRuntimeState {
    PodRuntimeState {
        containers: states
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect(),
        ..Default::default()
    }
}
