//! Test fixtures: a fixed instant and a process pod built as data.

use chrono::TimeZone;
use kumo_api::pod::{Container, PodSpec};
use kumo_api::{ObjectMeta, Pod, RestartPolicy, Time};

/// A fixed instant plus `secs` seconds.
pub fn t(secs: i64) -> Time {
    chrono::Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date")
        + chrono::Duration::seconds(secs)
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
