//! The Pod kind: containers that share a node, with their restart policy and reported state.

use crate::meta::{Condition, ObjectMeta, Time};
use crate::quantity::Quantity;
use crate::validation::{check_name, is_dns_label, Errors};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

mod security;
mod volume;

pub use security::{
    canonical_capability, Capabilities, PodSecurityContext, SeccompProfile, SeccompProfileType,
    SecurityContext, CAPABILITY_NAMES,
};
pub use volume::{
    EmptyDirVolumeSource, HostPathType, HostPathVolumeSource, NodeDir, Volume, VolumeMount,
    MEDIUM_MEMORY,
};

/// Extended resource name for NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
pub use crate::keys::ANNOTATION_GPU_DEVICES;
/// Runtime class that runs containers as host processes.
pub const RUNTIME_PROCESS: &str = "process";
/// Runtime class of OCI containers run by runc (the default where runc is installed).
pub const RUNTIME_RUNC: &str = "runc";
/// Runtime class of OCI containers sandboxed by gVisor's runsc.
pub const RUNTIME_RUNSC: &str = "runsc";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Secrets of the pod's namespace holding registry credentials for its images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Use the node's network namespace (runc; needs a privileged namespace and node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    /// Use the node's process ID namespace (runc; needs a privileged namespace and node).
    #[serde(default, rename = "hostPID", skip_serializing_if = "Option::is_none")]
    pub host_pid: Option<bool>,
    /// Use the node's IPC namespace (runc; needs a privileged namespace and node).
    #[serde(default, rename = "hostIPC", skip_serializing_if = "Option::is_none")]
    pub host_ipc: Option<bool>,
    /// The ServiceAccount the pod runs as; the API server sets `default` at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Whether the agent mounts the account's token into the containers (default true; the
    /// API server sets false at creation when the account says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
}

/// A reference to an object in the same namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    #[serde(default)]
    pub name: String,
}

impl PodSpec {
    /// The host namespaces the pod asks to share, by their field names.
    pub fn host_namespaces(&self) -> Vec<&'static str> {
        [
            ("hostNetwork", self.host_network),
            ("hostPID", self.host_pid),
            ("hostIPC", self.host_ipc),
        ]
        .into_iter()
        .filter(|(_, on)| *on == Some(true))
        .map(|(name, _)| name)
        .collect()
    }

    /// The grace period for a stop, 30 s by default as in Kubernetes.
    pub fn grace_period_seconds(&self) -> i64 {
        self.termination_grace_period_seconds.unwrap_or(30)
    }

    /// The pod's total request of `resource`, in milli-units: the sum over containers, where a
    /// container's request defaults to its limit (as Kubernetes does).
    pub fn request_millis(&self, resource: &str) -> i128 {
        self.containers
            .iter()
            .map(|c| c.resources.request(resource).map_or(0, Quantity::millis))
            .sum()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "ResourceRequirements::is_empty")]
    pub resources: ResourceRequirements,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
}

impl Container {
    /// The pull policy in effect: the one set, else `Always` for a `:latest` or untagged
    /// image and `IfNotPresent` otherwise (Kubernetes' defaulting).
    pub fn pull_policy(&self) -> PullPolicy {
        if let Some(p) = self.image_pull_policy {
            return p;
        }
        let image = self.image.as_deref().unwrap_or_default();
        if image.contains('@') {
            return PullPolicy::IfNotPresent;
        }
        let last = image.rsplit('/').next().unwrap_or(image);
        match last.split_once(':') {
            Some((_, "latest")) | None => PullPolicy::Always,
            Some(_) => PullPolicy::IfNotPresent,
        }
    }
}

/// When the agent pulls a container's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
}

impl ResourceRequirements {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }

    /// The request for `resource`, falling back to its limit.
    pub fn request(&self, resource: &str) -> Option<&Quantity> {
        self.requests
            .get(resource)
            .or_else(|| self.limits.get(resource))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<TolerationOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TolerationOperator {
    Exists,
    Equal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    pub fn is_terminal(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodStatus {
    #[serde(default)]
    pub phase: PodPhase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStatus {
    pub name: String,
    #[serde(default)]
    pub state: ContainerState,
    #[serde(default, skip_serializing_if = "ContainerState::is_empty")]
    pub last_state: ContainerState,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `process://PID` for the process runtime, `runc://ID` for OCI runtimes.
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    /// The devices the node gave the container, per resource (Kubernetes' field): for
    /// `nvidia.com/gpu`, the GPU indices of the `kumo.dev/gpu-devices` record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocated_resources_status: Vec<ResourceStatus>,
}

/// Devices of one resource allocated to a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceStatus {
    /// The resource, e.g. `nvidia.com/gpu`.
    pub name: String,
    #[serde(default)]
    pub resources: Vec<ResourceHealth>,
}

/// One allocated device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceHealth {
    /// The device's id on its node (a GPU's index).
    #[serde(rename = "resourceID")]
    pub resource_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<ContainerStateWaiting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<ContainerStateRunning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<ContainerStateTerminated>,
}

impl ContainerState {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_none() && self.running.is_none() && self.terminated.is_none()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStateWaiting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStateRunning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStateTerminated {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

/// A readiness check the agent runs against a running container (Kubernetes' `readinessProbe`):
/// the container is ready only after it passes, and stops being ready when it fails.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i64>,
}

/// `GET path` on the port; a 2xx or 3xx answer passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    #[serde(default)]
    pub path: String,
    /// Without a port, the container's `PORT` environment variable (kumo's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

/// A TCP connect to the port passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocketAction {
    /// Without a port, the container's `PORT` environment variable (kumo's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
}

fn validate_probe(p: &Probe, path: &str, errors: &mut Errors) {
    let port = match (&p.http_get, &p.tcp_socket) {
        (Some(h), None) => {
            if !h.path.starts_with('/') {
                errors.add(
                    format!("{path}.httpGet.path"),
                    format!("Invalid value: {:?}: must start with '/'", h.path),
                );
            }
            h.port.map(|port| (port, format!("{path}.httpGet.port")))
        }
        (None, Some(t)) => t.port.map(|port| (port, format!("{path}.tcpSocket.port"))),
        _ => {
            errors.add(
                path,
                "Invalid value: give exactly one of httpGet or tcpSocket",
            );
            None
        }
    };
    if let Some((port, field)) = port {
        if !(1..=65535).contains(&port) {
            errors.add(
                field,
                format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
            );
        }
    }
    for (v, field) in [
        (p.timeout_seconds, "timeoutSeconds"),
        (p.period_seconds, "periodSeconds"),
    ] {
        if let Some(v) = v {
            crate::bounds::check_seconds(errors, format!("{path}.{field}"), v, 1);
        }
    }
}

/// Resources a container may request, with the quantities that make sense for each.
const KNOWN_RESOURCES: [&str; 4] = ["cpu", "memory", GPU_RESOURCE, "ephemeral-storage"];

/// Checks a pod's spec; `errors` collects every problem with its field path.
pub fn validate_pod_spec(spec: &PodSpec, errors: &mut Errors) {
    if spec.containers.is_empty() {
        errors.add(
            "spec.containers",
            "Required value: a pod needs at least one container",
        );
    }
    let process = spec.runtime_class_name.as_deref() == Some(RUNTIME_PROCESS);
    if let Some(rc) = &spec.runtime_class_name {
        if !is_dns_label(rc) {
            errors.add(
                "spec.runtimeClassName",
                format!("Invalid value: {rc:?}: must be a DNS label"),
            );
        }
    }
    let volumes = volume::validate_volumes(&spec.volumes, errors);
    if let Some(sa) = &spec.service_account_name {
        check_name(errors, "spec.serviceAccountName", sa, false);
    }
    for (i, r) in spec.image_pull_secrets.iter().enumerate() {
        check_name(
            errors,
            &format!("spec.imagePullSecrets[{i}].name"),
            &r.name,
            false,
        );
    }
    if let Some(sc) = &spec.security_context {
        security::validate_pod_security_context(sc, errors);
    }
    let mut names = BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        validate_container(c, &path, process, (&volumes, &mut names), errors);
        validate_resources(&c.resources, &path, errors);
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        crate::bounds::check_seconds(errors, "spec.terminationGracePeriodSeconds", g, 0);
    }
    for (k, v) in &spec.node_selector {
        if !crate::validation::is_qualified_name(k) || !crate::validation::is_label_value(v) {
            errors.add(
                format!("spec.nodeSelector.{k}"),
                format!("Invalid value: {k}={v}: not a valid label"),
            );
        }
    }
    for (i, t) in spec.tolerations.iter().enumerate() {
        if t.operator == Some(TolerationOperator::Exists)
            && t.value.as_deref().is_some_and(|v| !v.is_empty())
        {
            errors.add(
                format!("spec.tolerations[{i}].value"),
                "Invalid value: must be empty when operator is Exists",
            );
        }
        if t.key.is_none() && t.operator != Some(TolerationOperator::Exists) {
            errors.add(
                format!("spec.tolerations[{i}].operator"),
                "Invalid value: must be Exists when key is empty",
            );
        }
    }
}

/// Checks one container (`path` is `spec.containers[i]`) but its resources, against the pod's
/// volume names and the container names seen so far.
fn validate_container<'a>(
    c: &'a Container,
    path: &str,
    process: bool,
    (volumes, names): (&BTreeSet<String>, &mut BTreeSet<&'a str>),
    errors: &mut Errors,
) {
    volume::validate_mounts(c, path, volumes, errors);
    if let Some(sc) = &c.security_context {
        security::validate_security_context(sc, &format!("{path}.securityContext"), errors);
    }
    check_name(errors, &format!("{path}.name"), &c.name, true);
    if let Some(p) = &c.readiness_probe {
        validate_probe(p, &format!("{path}.readinessProbe"), errors);
    }
    if !c.name.is_empty() && !names.insert(c.name.as_str()) {
        errors.add(
            format!("{path}.name"),
            format!("Duplicate value: {:?}", c.name),
        );
    }
    match &c.image {
        None if !process => errors.add(
            format!("{path}.image"),
            "Required value: an image is required unless runtimeClassName is \"process\"",
        ),
        Some(img) if img.trim().is_empty() => {
            errors.add(format!("{path}.image"), "Required value: image is empty")
        }
        _ => {}
    }
    if process && c.command.is_empty() && c.image.is_none() {
        errors.add(
            format!("{path}.command"),
            "Required value: a process container needs a command",
        );
    }
    for (j, e) in c.env.iter().enumerate() {
        let ok = !e.name.is_empty()
            && !e.name.starts_with(|ch: char| ch.is_ascii_digit())
            && e.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !ok {
            errors.add(
                format!("{path}.env[{j}].name"),
                format!("Invalid value: {:?}: must be a C identifier", e.name),
            );
        }
    }
    for (j, p) in c.ports.iter().enumerate() {
        if !(1..=65535).contains(&p.container_port) {
            errors.add(
                format!("{path}.ports[{j}].containerPort"),
                format!(
                    "Invalid value: {}: must be between 1 and 65535, inclusive",
                    p.container_port
                ),
            );
        }
        if let Some(hp) = p.host_port {
            if hp != 0 && !(1..=65535).contains(&hp) {
                errors.add(
                    format!("{path}.ports[{j}].hostPort"),
                    format!("Invalid value: {hp}: must be between 1 and 65535, inclusive"),
                );
            }
        }
    }
}

/// Checks a container's requests and limits (`path` is `spec.containers[i]`).
fn validate_resources(resources: &ResourceRequirements, path: &str, errors: &mut Errors) {
    for (kind, map) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        for (res, q) in map {
            let qpath = format!("{path}.resources.{kind}.{res}");
            if !KNOWN_RESOURCES.contains(&res.as_str()) {
                errors.add(
                    qpath,
                    format!("Unsupported value: {res:?}: supported values: \"cpu\", \"memory\", \"{GPU_RESOURCE}\", \"ephemeral-storage\""),
                );
            } else if res != "cpu" && q.millis() % 1000 != 0 {
                errors.add(
                    qpath,
                    format!("Invalid value: {:?}: must be a whole number", q.as_str()),
                );
            }
        }
        if let (Some(r), Some(l)) = (
            resources.requests.get(GPU_RESOURCE),
            resources.limits.get(GPU_RESOURCE),
        ) {
            if kind == "limits" && r.millis() != l.millis() {
                errors.add(
                    format!("{path}.resources.requests.{GPU_RESOURCE}"),
                    "Invalid value: must be equal to the limit for GPUs",
                );
            }
        }
    }
    for res in resources.requests.keys() {
        if let (Some(r), Some(l)) = (resources.requests.get(res), resources.limits.get(res)) {
            if r.millis() > l.millis() {
                errors.add(
                    format!("{path}.resources.requests.{res}"),
                    format!(
                        "Invalid value: {:?}: must be less than or equal to the limit {:?}",
                        r.as_str(),
                        l.as_str()
                    ),
                );
            }
        }
    }
}
