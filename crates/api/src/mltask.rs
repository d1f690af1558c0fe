//! The MLTask and Queue kinds (`kumo.dev/v1`): a GPU training job in a handful of fields, and the
//! named queues tasks wait in.

use crate::bounds::{
    check_range, check_seconds, MAX_GPUS_PER_REPLICA, MAX_GPU_QUOTA, MAX_PARALLELISM, MAX_PRIORITY,
    MAX_RETRIES,
};
use crate::meta::{Condition, ObjectMeta, Time};
use crate::pod::EnvVar;
use crate::quantity::Quantity;
use crate::validation::{is_dns_label, is_label_value, Errors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Port replicas rendezvous on unless the task says otherwise (torchrun's default).
pub const DEFAULT_MASTER_PORT: u16 = 29500;
/// The queue a task enters when it names none.
pub const DEFAULT_QUEUE: &str = "default";
/// Whole-gang restarts allowed when the task does not say.
pub const DEFAULT_MAX_RETRIES: i32 = 3;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MLTask {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: MLTaskSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MLTaskStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MLTaskSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Replicas, one pod each; `WORLD_SIZE`.
    #[serde(default = "one")]
    pub parallelism: i32,
    /// Per replica.
    #[serde(default)]
    pub resources: TaskResources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<TaskData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<TaskOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scratch: Option<TaskScratch>,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "default_max_retries")]
    pub max_retries: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_port: Option<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Set to stop every replica gracefully and end the task as Cancelled (`kumo cancel`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
}

impl Default for MLTaskSpec {
    fn default() -> Self {
        MLTaskSpec {
            image: None,
            runtime_class_name: None,
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            parallelism: 1,
            resources: TaskResources::default(),
            data: None,
            output: None,
            scratch: None,
            queue: default_queue(),
            priority: 0,
            max_retries: DEFAULT_MAX_RETRIES,
            active_deadline_seconds: None,
            master_port: None,
            node_selector: BTreeMap::new(),
            cancel: false,
        }
    }
}

fn one() -> i32 {
    1
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_string()
}

fn default_max_retries() -> i32 {
    DEFAULT_MAX_RETRIES
}

/// What each replica needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskResources {
    #[serde(default)]
    pub gpus: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
    /// Selects nodes whose `kumo.dev/gpu-model` label equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
}

/// Training data, mounted read-only at /data: a pushed dataset or a directory on the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
}

/// Where the task's /output is collected, relative to the output root.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskOutput {
    pub path: String,
}

/// Scratch space at /scratch, kept across retries on the same node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskScratch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskPhase {
    #[default]
    Queued,
    Admitted,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskPhase {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskPhase::Succeeded | TaskPhase::Failed | TaskPhase::Cancelled
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MLTaskStatus {
    #[serde(default)]
    pub phase: TaskPhase,
    /// 1 = next to be admitted in its queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// Why the task waits, in a sentence a person understands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    #[serde(default)]
    pub attempts: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Replica 0's address, handed to every replica as `MASTER_ADDR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_addr: Option<String>,
    /// After a gang failure, when the task may be admitted again (the back-off's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Time>,
    /// The store revision the task was first seen at: orders tasks submitted within one second
    /// (creation timestamps have whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_revision: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaStatus {
    pub rank: i32,
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::PodPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Use of each of the replica's GPUs at the agent's last sample (labelled when fake).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_usage: Vec<crate::gpu_usage::GpuUsage>,
}

/// A named queue; with a GPU quota, its tasks are guaranteed that many GPUs and may borrow idle
/// ones beyond it (reclaimed by preemption when another queue needs its own).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Queue {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: QueueSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<QueueStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_quota: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueStatus {
    #[serde(default)]
    pub pending: i32,
    #[serde(default)]
    pub running: i32,
    #[serde(default)]
    pub gpus_in_use: i64,
}

/// Checks a task's spec; every problem with its field path.
pub fn validate_mltask_spec(spec: &MLTaskSpec, errors: &mut Errors) {
    let process = spec.runtime_class_name.as_deref() == Some(crate::pod::RUNTIME_PROCESS);
    match &spec.image {
        None if !process => errors.add(
            "spec.image",
            "Required value: an image is required unless runtimeClassName is \"process\"",
        ),
        Some(i) if i.trim().is_empty() => {
            errors.add("spec.image", "Required value: image is empty")
        }
        _ => {}
    }
    if spec.image.is_none() && spec.command.is_empty() {
        errors.add(
            "spec.command",
            "Required value: a task without an image needs a command",
        );
    }
    check_range(
        errors,
        "spec.parallelism",
        spec.parallelism,
        1,
        MAX_PARALLELISM,
    );
    check_range(
        errors,
        "spec.resources.gpus",
        spec.resources.gpus,
        0,
        MAX_GPUS_PER_REPLICA,
    );
    if let Some(m) = &spec.resources.gpu_model {
        if m.is_empty() || !is_label_value(m) {
            errors.add(
                "spec.resources.gpuModel",
                format!(
                    "Invalid value: {m:?}: must be a label value (letters, digits, '-', '_', '.')"
                ),
            );
        }
    }
    if let Some(data) = &spec.data {
        match (&data.dataset, &data.host_path) {
            (Some(_), Some(_)) | (None, None) => errors.add(
                "spec.data",
                "Invalid value: give exactly one of dataset or hostPath",
            ),
            (Some(d), None) if !is_dns_label(d) => errors.add(
                "spec.data.dataset",
                format!("Invalid value: {d:?}: must be a DNS label"),
            ),
            (None, Some(p)) if !p.starts_with('/') => errors.add(
                "spec.data.hostPath",
                format!("Invalid value: {p:?}: must be an absolute path"),
            ),
            _ => {}
        }
    }
    if let Some(out) = &spec.output {
        if !is_contained_path(&out.path) {
            errors.add(
                "spec.output.path",
                format!("Invalid value: {:?}: must be a relative path that stays inside the output root", out.path),
            );
        }
    }
    if !is_dns_label(&spec.queue) {
        errors.add(
            "spec.queue",
            format!("Invalid value: {:?}: must be a DNS label", spec.queue),
        );
    }
    check_range(
        errors,
        "spec.priority",
        spec.priority,
        -MAX_PRIORITY,
        MAX_PRIORITY,
    );
    check_range(errors, "spec.maxRetries", spec.max_retries, 0, MAX_RETRIES);
    if let Some(d) = spec.active_deadline_seconds {
        check_seconds(errors, "spec.activeDeadlineSeconds", d, 1);
    }
    if spec.master_port == Some(0) {
        errors.add(
            "spec.masterPort",
            "Invalid value: 0: must be between 1 and 65535, inclusive",
        );
    }
    validate_as_pod(spec, errors);
}

/// The replica pods must be valid too (or the task would be accepted and never run): checks a
/// pod with the task's environment, resources and node selector by the pod rules, naming the
/// task's own fields. What the task checks itself (image, command) is left to it.
fn validate_as_pod(spec: &MLTaskSpec, errors: &mut Errors) {
    use crate::pod::{Container, PodSpec, ResourceRequirements};
    let mut limits = BTreeMap::new();
    for (name, q) in [
        ("cpu", &spec.resources.cpu),
        ("memory", &spec.resources.memory),
    ] {
        if let Some(q) = q {
            limits.insert(name.to_string(), q.clone());
        }
    }
    let pod = PodSpec {
        containers: vec![Container {
            name: "main".into(),
            image: Some("image".into()),
            env: spec.env.clone(),
            working_dir: spec.working_dir.clone(),
            resources: ResourceRequirements {
                requests: BTreeMap::new(),
                limits,
            },
            ..Default::default()
        }],
        node_selector: spec.node_selector.clone(),
        ..Default::default()
    };
    let mut pod_errors = Errors::default();
    crate::pod::validate_pod_spec(&pod, &mut pod_errors);
    for e in pod_errors.into_result().err().unwrap_or_default() {
        let path = if let Some(rest) = e.path.strip_prefix("spec.containers[0].env") {
            format!("spec.env{rest}")
        } else if let Some(rest) = e.path.strip_prefix("spec.containers[0].resources.limits.") {
            format!("spec.resources.{rest}")
        } else if e.path.starts_with("spec.nodeSelector") {
            e.path.clone()
        } else {
            continue;
        };
        errors.add(path, e.message);
    }
}

/// Which spec fields may change after creation: `cancel` and `priority` (a queued task can be
/// bumped); everything else shapes running pods and is fixed.
pub fn validate_mltask_update(old: &MLTaskSpec, new: &MLTaskSpec, errors: &mut Errors) {
    let mut frozen = new.clone();
    frozen.cancel = old.cancel;
    frozen.priority = old.priority;
    if &frozen != old {
        errors.add(
            "spec",
            "Forbidden: only spec.cancel and spec.priority may change after an MLTask is created",
        );
    }
}

/// Whether `path` is relative and never climbs above where it starts (`a/b`, not `../a` or `/a`).
pub fn is_contained_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|seg| seg != ".." && !seg.contains('\0'))
}

/// Checks a queue's spec.
pub fn validate_queue_spec(spec: &QueueSpec, errors: &mut Errors) {
    if let Some(q) = spec.gpu_quota {
        check_range(errors, "spec.gpuQuota", q, 0, MAX_GPU_QUOTA);
    }
}
