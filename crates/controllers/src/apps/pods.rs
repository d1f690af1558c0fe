//! The pods of a release: how one replica looks (pure), and how a replica's state is read.

use kumo_api::app::{App, Protocol, Release, WEB_PROCESS};
use kumo_api::keys::{
    format_release, parse_release, parse_time, ANNOTATION_DRAIN_UNTIL, ANNOTATION_PORT,
    ANNOTATION_PROTOCOL, LABEL_APP, LABEL_PROCESS, LABEL_RELEASE, PORT_AUTO,
};
use kumo_api::meta::find_condition;
use kumo_api::pod::{
    Container, ContainerPort, EnvVar, HttpGetAction, Probe, ResourceRequirements, TcpSocketAction,
    RUNTIME_PROCESS,
};
use kumo_api::{ConditionStatus, ObjectMeta, OwnerReference, Pod, PodPhase};

/// Seconds a replica gets between SIGTERM and SIGKILL.
pub const REPLICA_GRACE_SECONDS: i64 = 10;

/// How a replica stands, as far as a rollout cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// Being deleted: counts for nothing, but its name is still taken.
    Terminating,
    /// Will never serve again (failed, or its node was lost): to be replaced.
    Dead,
    Ready,
    Starting,
}

/// Whether a pod's node was lost (its status says so), so it must be replaced elsewhere.
fn node_lost(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.phase == PodPhase::Unknown || s.reason.as_deref() == Some("NodeLost"))
}

pub fn replica_state(pod: &Pod) -> ReplicaState {
    if pod.metadata.deletion_timestamp.is_some() {
        return ReplicaState::Terminating;
    }
    let status = pod.status.as_ref();
    if status.is_some_and(|s| s.phase.is_terminal()) || node_lost(pod) {
        return ReplicaState::Dead;
    }
    let ready = status
        .and_then(|s| find_condition(&s.conditions, "Ready"))
        .is_some_and(|c| c.status == ConditionStatus::True);
    if ready {
        ReplicaState::Ready
    } else {
        ReplicaState::Starting
    }
}

/// The grace period to delete a pod with: none for one whose node is gone (nobody would
/// finish a graceful deletion there).
pub fn delete_grace(pod: &Pod) -> i64 {
    if node_lost(pod) {
        0
    } else {
        REPLICA_GRACE_SECONDS
    }
}

/// When a draining replica is to be deleted, if it is draining.
pub fn drain_until(pod: &Pod) -> Option<kumo_api::Time> {
    parse_time(pod.metadata.annotations.get(ANNOTATION_DRAIN_UNTIL)?)
}

/// The release version a pod runs, from its label.
pub fn pod_release(pod: &Pod) -> Option<i64> {
    parse_release(pod.metadata.labels.get(LABEL_RELEASE)?)
}

/// The process a pod runs, from its label.
pub fn pod_process(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.get(LABEL_PROCESS).map(String::as_str)
}

/// Whether the process listens: the web process always does, others when they name a port.
pub fn listens(process: &str, port: Option<i64>) -> bool {
    process == WEB_PROCESS || port.is_some()
}

/// One replica of `process` of `release` (named by the server from `generateName`).
pub fn replica(app: &App, release: &Release, process: &str) -> Pod {
    let r = &release.spec;
    let spec = r
        .content
        .processes
        .get(process)
        .cloned()
        .unwrap_or_default();
    let process_runtime = r.content.runtime_class_name.as_deref() == Some(RUNTIME_PROCESS);
    let listens = listens(process, spec.port);
    let mut meta = ObjectMeta {
        generate_name: Some(format!("{}-v{}-{process}-", r.app, r.version)),
        namespace: Some(app.metadata.ns().to_string()),
        ..Default::default()
    };
    meta.labels.insert(LABEL_APP.into(), r.app.clone());
    meta.labels
        .insert(LABEL_RELEASE.into(), format_release(r.version));
    meta.labels.insert(LABEL_PROCESS.into(), process.into());
    if let Some(uid) = &app.metadata.uid {
        meta.owner_references.push(OwnerReference {
            api_version: "kumo.dev/v1".into(),
            kind: "App".into(),
            name: app.metadata.name.clone(),
            uid: uid.clone(),
            controller: Some(true),
        });
    }
    let mut env: Vec<EnvVar> = r
        .content
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: v.clone(),
        })
        .collect();
    for (k, v) in [
        ("KUMO_APP", r.app.clone()),
        ("KUMO_RELEASE", format!("v{}", r.version)),
        ("KUMO_PROCESS", process.to_string()),
    ] {
        env.push(EnvVar {
            name: k.into(),
            value: v,
        });
    }
    let mut container = Container {
        name: process.to_string(),
        image: r.content.image.clone(),
        command: spec.command.clone(),
        ..Default::default()
    };
    if listens {
        meta.annotations.insert(
            ANNOTATION_PROTOCOL.into(),
            spec.protocol.unwrap_or(Protocol::Http1).as_str().into(),
        );
        if process_runtime {
            // Host network: the agent picks a free port per replica and sets PORT.
            meta.annotations
                .insert(ANNOTATION_PORT.into(), PORT_AUTO.into());
        } else {
            let port = spec.port.unwrap_or(5000);
            env.push(EnvVar {
                name: "PORT".into(),
                value: port.to_string(),
            });
            container.ports.push(ContainerPort {
                container_port: port,
                name: Some("http".into()),
                ..Default::default()
            });
        }
        let health = r.content.healthcheck.clone().unwrap_or_default();
        container.readiness_probe = Some(Probe {
            http_get: health
                .path
                .clone()
                .map(|path| HttpGetAction { path, port: None }),
            tcp_socket: health.path.is_none().then(TcpSocketAction::default),
            timeout_seconds: health.timeout_seconds,
            period_seconds: None,
        });
    }
    container.env = env;
    let mut resources = ResourceRequirements::default();
    if let Some(cpu) = &r.content.resources.cpu {
        resources.limits.insert("cpu".into(), cpu.clone());
    }
    if let Some(mem) = &r.content.resources.memory {
        resources.limits.insert("memory".into(), mem.clone());
    }
    container.resources = resources;
    let mut pod = Pod {
        metadata: meta,
        ..Default::default()
    };
    pod.spec.containers.push(container);
    pod.spec.runtime_class_name = r.content.runtime_class_name.clone();
    pod.spec.termination_grace_period_seconds = Some(REPLICA_GRACE_SECONDS);
    pod
}
