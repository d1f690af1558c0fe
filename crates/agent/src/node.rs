//! Node registration and heartbeat: the Node object's labels and status, built purely from facts.

use crate::gpu::{model_label, GpuDiscovery};
use kumo_api::keys::ANNOTATION_FAKE_GPUS;
use kumo_api::meta::set_condition;
use kumo_api::node::{
    AgentEndpoint, DaemonEndpoints, GpuDevice, NodeAddress, NodeStatus, NodeSystemInfo,
    LABEL_GPU_MODEL, LABEL_HOSTNAME,
};
use kumo_api::{
    Condition, ConditionStatus, Node, ObjectMeta, Quantity, Resource, Time, GPU_RESOURCE,
};
use kumo_client::{Client, ClientError};
use std::collections::BTreeMap;
use std::time::Duration;

/// Condition type saying the same, visible in `kumo describe node`.
pub const FAKE_GPUS_CONDITION: &str = "FakeGPUs";
/// Pods a node accepts, as kubelet's default.
pub const MAX_PODS: i64 = 110;

/// What the agent knows about its machine.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub kernel_version: String,
}

impl HostFacts {
    /// Reads the machine: available cores, `MemTotal`, the kernel release.
    pub fn read() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo_total(&t))
            .unwrap_or(0);
        let kernel_version = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        HostFacts {
            cpus,
            memory_bytes,
            kernel_version,
        }
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// Who this node is: its name, labels and where its agent listens.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeIdentity {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub address: String,
    pub port: u16,
    pub runtime_classes: Vec<String>,
    /// The pod CIDR (`--pod-cidr`) a Node this agent creates is given; `None` leaves it to the
    /// control plane's node IPAM. An existing Node's is never changed (its spec is the
    /// administrator's and the control plane's).
    pub pod_cidr: Option<String>,
}

/// The labels the agent owns: the configured ones, the hostname and the GPU model.
pub fn node_labels(id: &NodeIdentity, gpus: &[GpuDevice]) -> BTreeMap<String, String> {
    let mut labels = id.labels.clone();
    labels.insert(LABEL_HOSTNAME.to_string(), id.name.clone());
    if let Some(model) = gpus
        .first()
        .map(|g| model_label(&g.model))
        .filter(|m| !m.is_empty())
    {
        labels.insert(LABEL_GPU_MODEL.to_string(), model);
    }
    labels
}

/// The node's status at `now`, keeping conditions others own from `previous`.
pub fn node_status(
    id: &NodeIdentity,
    facts: &HostFacts,
    gpus: &[GpuDevice],
    fake_gpus: bool,
    previous: Option<&NodeStatus>,
    now: Time,
) -> NodeStatus {
    let mut capacity = BTreeMap::new();
    capacity.insert(
        "cpu".to_string(),
        Quantity::from_units(i64::from(facts.cpus)),
    );
    capacity.insert(
        "memory".to_string(),
        Quantity::from_units(i64::try_from(facts.memory_bytes).unwrap_or(i64::MAX)),
    );
    capacity.insert("pods".to_string(), Quantity::from_units(MAX_PODS));
    if !gpus.is_empty() {
        capacity.insert(
            GPU_RESOURCE.to_string(),
            Quantity::from_units(gpus.len() as i64),
        );
    }
    let mut conditions = previous.map(|p| p.conditions.clone()).unwrap_or_default();
    let mut ready = Condition::new(
        "Ready",
        ConditionStatus::True,
        Some("AgentReady"),
        Some("kumo agent is posting ready status".to_string()),
        now,
    );
    ready.last_heartbeat_time = Some(now);
    set_condition(&mut conditions, ready);
    if fake_gpus {
        set_condition(
            &mut conditions,
            Condition::new(
                FAKE_GPUS_CONDITION,
                ConditionStatus::True,
                Some("FakeGPUs"),
                Some(format!(
                    "this node reports {} made-up GPUs (--fake-gpus); they are not real devices",
                    gpus.len()
                )),
                now,
            ),
        );
    } else {
        conditions.retain(|c| c.type_ != FAKE_GPUS_CONDITION);
    }
    NodeStatus {
        allocatable: capacity.clone(),
        capacity,
        conditions,
        addresses: vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: id.address.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: id.name.clone(),
            },
        ],
        node_info: Some(NodeSystemInfo {
            kumo_version: kumo_api::VERSION.to_string(),
            kernel_version: facts.kernel_version.clone(),
            operating_system: "linux".into(),
            architecture: std::env::consts::ARCH.into(),
        }),
        daemon_endpoints: Some(DaemonEndpoints {
            agent_endpoint: AgentEndpoint {
                address: id.address.clone(),
                port: id.port,
            },
        }),
        gpus: gpus.to_vec(),
        runtime_classes: id.runtime_classes.clone(),
    }
}

/// Keeps the Node object in the API: registers it, then refreshes its status every interval.
pub struct NodeAgent {
    pub client: Client,
    pub id: NodeIdentity,
    pub facts: HostFacts,
    pub gpus: std::sync::Arc<dyn GpuDiscovery>,
    pub interval: Duration,
}

impl NodeAgent {
    /// Registers the node and heartbeats forever; API errors are logged and retried.
    pub async fn run(self) {
        let mut registered = false;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let gpus = self.gpus.discover();
            if !registered {
                match self.register(&gpus).await {
                    Ok(()) => {
                        registered = true;
                        tracing::info!(node = %self.id.name, "node registered");
                    }
                    Err(e) => {
                        tracing::warn!(node = %self.id.name, error = %e, "cannot register node; retrying");
                        continue;
                    }
                }
            }
            match self.heartbeat(&gpus).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {
                    tracing::warn!(node = %self.id.name, "node object was deleted; registering again");
                    registered = false;
                    tick.reset_immediately();
                }
                Err(e) => tracing::warn!(node = %self.id.name, error = %e, "heartbeat failed"),
            }
        }
    }

    /// Creates the Node, or refreshes the labels and annotations of an existing one (its spec
    /// is the administrator's and is kept).
    pub async fn register(&self, gpus: &[GpuDevice]) -> Result<(), ClientError> {
        let labels = node_labels(&self.id, gpus);
        let fake = self.gpus.is_fake();
        for _ in 0..5 {
            match self.client.get_opt::<Node>("", &self.id.name).await? {
                None => {
                    let mut meta = ObjectMeta {
                        name: self.id.name.clone(),
                        labels: labels.clone(),
                        ..Default::default()
                    };
                    if fake {
                        meta.annotations
                            .insert(ANNOTATION_FAKE_GPUS.into(), "true".into());
                    }
                    let mut node = Node {
                        metadata: meta,
                        ..Default::default()
                    };
                    if let Some(cidr) = &self.id.pod_cidr {
                        node.spec.pod_cidr = Some(cidr.clone());
                        node.spec.pod_cidrs = vec![cidr.clone()];
                    }
                    node.set_type_meta();
                    match self.client.create(&node).await {
                        Ok(_) => return Ok(()),
                        Err(e) if e.code() == Some(409) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Some(mut node) => {
                    let before = node.metadata.clone();
                    node.metadata.labels.extend(labels.clone());
                    if fake {
                        node.metadata
                            .annotations
                            .insert(ANNOTATION_FAKE_GPUS.into(), "true".into());
                    } else {
                        node.metadata.annotations.remove(ANNOTATION_FAKE_GPUS);
                    }
                    if node.metadata == before {
                        return Ok(());
                    }
                    match self.client.update(&node).await {
                        Ok(_) => return Ok(()),
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes a fresh status on the freshest Node, retrying on conflicts.
    pub async fn heartbeat(&self, gpus: &[GpuDevice]) -> Result<(), ClientError> {
        let mut last = None;
        for _ in 0..5 {
            let mut node: Node = self.client.get("", &self.id.name).await?;
            let now = chrono::Utc::now();
            node.status = Some(node_status(
                &self.id,
                &self.facts,
                gpus,
                self.gpus.is_fake(),
                node.status.as_ref(),
                now,
            ));
            match self.client.update_status(&node).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Request("heartbeat kept conflicting".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::t;
    use crate::gpu::FakeGpus;
    use kumo_api::meta::find_condition;

    fn id() -> NodeIdentity {
        NodeIdentity {
            name: "n1".into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            address: "10.0.0.5".into(),
            port: 7401,
            runtime_classes: vec!["process".into()],
            pod_cidr: None,
        }
    }

    fn facts() -> HostFacts {
        HostFacts {
            cpus: 2,
            memory_bytes: 24 << 30,
            kernel_version: "6.1.0".into(),
        }
    }

    #[test]
    fn meminfo_total_in_bytes() {
        let text = "MemTotal:       24593012 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(24593012 * 1024));
        assert_eq!(parse_meminfo_total("MemFree: 1 kB"), None);
        assert_eq!(parse_meminfo_total("MemTotal: x kB"), None);
    }

    #[test]
    fn labels_carry_hostname_and_gpu_model() {
        let l = node_labels(&id(), &[]);
        assert_eq!(
            l.get("kubernetes.io/hostname").map(String::as_str),
            Some("n1")
        );
        assert_eq!(l.get("zone").map(String::as_str), Some("a"));
        assert!(!l.contains_key("kumo.dev/gpu-model"));
        let l = node_labels(&id(), &FakeGpus(1).discover());
        assert_eq!(
            l.get("kumo.dev/gpu-model").map(String::as_str),
            Some("FakeGPU")
        );
    }

    #[test]
    fn status_reports_capacity_endpoint_and_ready() {
        let gpus = FakeGpus(2).discover();
        let s = node_status(&id(), &facts(), &gpus, true, None, t(5));
        let cap = |k: &str| s.capacity.get(k).map(|q| q.as_str().to_string());
        assert_eq!(cap("cpu").as_deref(), Some("2"));
        assert_eq!(cap("memory").as_deref(), Some("25769803776"));
        assert_eq!(cap("pods").as_deref(), Some("110"));
        assert_eq!(cap("nvidia.com/gpu").as_deref(), Some("2"));
        assert_eq!(s.allocatable, s.capacity);
        assert_eq!(
            s.daemon_endpoints.as_ref().map(|d| d.agent_endpoint.port),
            Some(7401)
        );
        assert_eq!(
            s.addresses[0],
            NodeAddress {
                type_: "InternalIP".into(),
                address: "10.0.0.5".into()
            }
        );
        assert_eq!(s.runtime_classes, ["process"]);
        assert_eq!(s.gpus.len(), 2);
        let info = s.node_info.as_ref().expect("info");
        assert_eq!(
            (info.operating_system.as_str(), info.kernel_version.as_str()),
            ("linux", "6.1.0")
        );
        let ready = find_condition(&s.conditions, "Ready").expect("ready");
        assert_eq!(ready.reason.as_deref(), Some("AgentReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("kumo agent is posting ready status")
        );
        assert_eq!(ready.last_heartbeat_time, Some(t(5)));
        assert!(find_condition(&s.conditions, FAKE_GPUS_CONDITION).is_some());

        // A later heartbeat moves the heartbeat time, not the transition time.
        let s2 = node_status(&id(), &facts(), &[], false, Some(&s), t(15));
        let ready = find_condition(&s2.conditions, "Ready").expect("ready");
        assert_eq!(
            (ready.last_transition_time, ready.last_heartbeat_time),
            (Some(t(5)), Some(t(15)))
        );
        assert!(!s2.capacity.contains_key("nvidia.com/gpu"));
        assert!(find_condition(&s2.conditions, FAKE_GPUS_CONDITION).is_none());
    }
}
