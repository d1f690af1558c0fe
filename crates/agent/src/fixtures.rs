//! Test fixtures: pods and container states built as data.

use crate::model::{ContainerRuntimeState, PodRuntimeState, RunState, SyncParams};
use kumo_api::pod::ContainerStateTerminated;
pub use kumo_runtime::fixtures::{pod, t};
use std::time::Duration;

pub fn params() -> SyncParams {
    SyncParams {
        node_name: "n1".into(),
        host_ip: "127.0.0.1".into(),
        runtime_classes: vec!["process".into()],
        backoff_base: Duration::from_secs(10),
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
