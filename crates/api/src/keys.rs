//! Every `kumo.dev/*` label and annotation key through which kumo's components talk, defined
//! once here, with the one parse and the one format of each structured value. The kinds'
//! modules (`app`, `pod`, `node`, `dataset`, `gpu_usage`) re-export the keys that belong to
//! them.
//!
//! A parse returns `None` when the value is not one of its kind: the readers treat such a key
//! as absent, as they always did.

use crate::meta::Time;
use std::collections::BTreeMap;

// Apps.

/// Label naming the app a pod belongs to.
pub const LABEL_APP: &str = "kumo.dev/app";
/// Label naming the release version (`3`) a pod runs; see [`parse_release`].
pub const LABEL_RELEASE: &str = "kumo.dev/release";
/// Label naming the process type (`web`, `worker`) a pod runs.
pub const LABEL_PROCESS: &str = "kumo.dev/process";
/// Label of one-off pods (`kumo run`), which no rollout counts.
pub const LABEL_ONE_OFF: &str = "kumo.dev/one-off";
/// Pod annotation asking the agent for a free host port (value [`PORT_AUTO`]); process runtime
/// only.
pub const ANNOTATION_PORT: &str = "kumo.dev/port";
/// The value of [`ANNOTATION_PORT`] that asks for a port.
pub const PORT_AUTO: &str = "auto";
/// Pod annotation where the agent records the host port it gave the pod; see [`parse_port`].
pub const ANNOTATION_ASSIGNED_PORT: &str = "kumo.dev/assigned-port";
/// Pod annotation naming the protocol (`http1`, `h2c`) its port speaks.
pub const ANNOTATION_PROTOCOL: &str = "kumo.dev/protocol";
/// Pod annotation the app controller sets on a replica it removes while it serves (scale down,
/// Rolling): the router sends it no new requests, and it is deleted at this time (RFC 3339);
/// see [`parse_time`].
pub const ANNOTATION_DRAIN_UNTIL: &str = "kumo.dev/drain-until";
/// Pod annotation an eviction (`POST pods/{name}/eviction`, what `kumo drain` sends) sets on a
/// replica its controller replaces: the time it was asked (RFC 3339). The App controller
/// surges a replacement and drains the replica once that is Ready; the MLTask controller
/// requeues the task without counting an attempt.
pub const ANNOTATION_EVICTION_REQUESTED: &str = "kumo.dev/eviction-requested";
/// Who replaces a pod once it is evicted, from its labels: an MLTask's replica, an App's
/// replica (with its release and process: a one-off `kumo run` pod has none, and nothing
/// replaces it), or nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodOwner {
    App(String),
    MLTask(String),
    None,
}

/// The [`PodOwner`] of a pod with these labels; the eviction API and `kumo drain` agree on it.
pub fn pod_owner(labels: &BTreeMap<String, String>) -> PodOwner {
    if let Some(task) = labels.get(LABEL_TASK) {
        PodOwner::MLTask(task.clone())
    } else if let (Some(app), true, true) = (
        labels.get(LABEL_APP),
        labels.contains_key(LABEL_RELEASE),
        labels.contains_key(LABEL_PROCESS),
    ) {
        PodOwner::App(app.clone())
    } else {
        PodOwner::None
    }
}

/// App annotation the CLI sets to say what a change is (copied into the release).
pub const ANNOTATION_CHANGE_CAUSE: &str = "kumo.dev/change-cause";
/// App annotation the CLI sets to say who made a change (copied into the release).
pub const ANNOTATION_CHANGED_BY: &str = "kumo.dev/changed-by";

// MLTask replicas.

/// Label naming the MLTask a replica pod belongs to.
pub const LABEL_TASK: &str = "kumo.dev/mltask";
/// Label holding a replica's rank (`0` is the master); see [`parse_rank`].
pub const LABEL_RANK: &str = "kumo.dev/rank";
/// Annotation on a replica pod: which attempt of its task created it; see [`parse_attempt`].
pub const ANNOTATION_ATTEMPT: &str = "kumo.dev/attempt";
/// Annotation on a replica pod carrying its task's `activeDeadlineSeconds` (admission reads
/// it); see [`parse_seconds`].
pub const ANNOTATION_DEADLINE: &str = "kumo.dev/active-deadline-seconds";
/// Annotation on a replica pod: the dataset its node mounts read-only.
pub const ANNOTATION_DATASET: &str = "kumo.dev/dataset";
/// Annotation on a replica pod: the task's `spec.output.path`; the node gives the replica a
/// writable output directory and uploads it when the replica ends.
pub const ANNOTATION_OUTPUT: &str = "kumo.dev/output";
/// Annotation on a replica pod: scratch space (its size limit, or empty for none).
pub const ANNOTATION_SCRATCH: &str = "kumo.dev/scratch";

// Scheduling.

/// Node label naming its zone; replicas of one app process spread over zones.
pub const LABEL_ZONE: &str = "kumo.dev/zone";
/// Pod label naming a gang: its pods are placed all together or not at all.
pub const LABEL_GANG: &str = "kumo.dev/gang";
/// Pod annotation: how many pods the gang has; see [`parse_gang_size`].
pub const ANNOTATION_GANG_SIZE: &str = "kumo.dev/gang-size";
/// Node label holding the model of its GPUs (`gpuModel` in MLTask selects on it).
pub const LABEL_GPU_MODEL: &str = "kumo.dev/gpu-model";

// GPUs.

/// Annotation the agent sets on a pod it gave GPUs: `CONTAINER=INDEX,INDEX;...` (device
/// indices); see [`parse_gpu_devices`].
pub const ANNOTATION_GPU_DEVICES: &str = "kumo.dev/gpu-devices";
/// Annotation the agent keeps on a pod holding GPUs: a JSON list of samples (its parse and
/// format are `gpu_usage::parse` and `gpu_usage::format`).
pub const ANNOTATION_GPU_USAGE: &str = "kumo.dev/gpu-usage";
/// Node annotation (value `true`) saying its GPUs are made up by `--fake-gpus`.
pub const ANNOTATION_FAKE_GPUS: &str = "kumo.dev/fake-gpus";

/// GPU device indices per container name: the value of [`ANNOTATION_GPU_DEVICES`].
pub type GpuDevices = BTreeMap<String, Vec<u32>>;

/// `main=0,1;side=2`.
pub fn format_gpu_devices(a: &GpuDevices) -> String {
    a.iter()
        .map(|(c, ids)| {
            let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
            format!("{c}={}", ids.join(","))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Reads a GPU-devices record back (empty parts are skipped); `None` when it is not one.
pub fn parse_gpu_devices(text: &str) -> Option<GpuDevices> {
    let mut a = GpuDevices::new();
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (c, ids) = part.split_once('=')?;
        let ids: Option<Vec<u32>> = ids
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect();
        a.insert(c.to_string(), ids?);
    }
    Some(a)
}

/// A time annotation ([`ANNOTATION_DRAIN_UNTIL`]): RFC 3339 in UTC, whole seconds.
pub fn format_time(t: Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Reads a time annotation back (any RFC 3339 offset, as UTC).
pub fn parse_time(text: &str) -> Option<Time> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// The host port in [`ANNOTATION_ASSIGNED_PORT`].
pub fn format_port(port: u16) -> String {
    port.to_string()
}

pub fn parse_port(text: &str) -> Option<u16> {
    text.parse().ok()
}

/// The release version in [`LABEL_RELEASE`].
pub fn format_release(version: i64) -> String {
    version.to_string()
}

pub fn parse_release(text: &str) -> Option<i64> {
    text.parse().ok()
}

/// The rank in [`LABEL_RANK`].
pub fn format_rank(rank: usize) -> String {
    rank.to_string()
}

pub fn parse_rank(text: &str) -> Option<usize> {
    text.parse().ok()
}

/// The attempt in [`ANNOTATION_ATTEMPT`].
pub fn format_attempt(attempt: i32) -> String {
    attempt.to_string()
}

pub fn parse_attempt(text: &str) -> Option<i32> {
    text.parse().ok()
}

/// The gang's size in [`ANNOTATION_GANG_SIZE`].
pub fn format_gang_size(size: usize) -> String {
    size.to_string()
}

pub fn parse_gang_size(text: &str) -> Option<usize> {
    text.parse().ok()
}

/// A number of seconds ([`ANNOTATION_DEADLINE`]).
pub fn format_seconds(seconds: i64) -> String {
    seconds.to_string()
}

pub fn parse_seconds(text: &str) -> Option<i64> {
    text.parse().ok()
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
