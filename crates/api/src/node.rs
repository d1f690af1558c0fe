//! The Node kind: a machine running `kumo agent`, its capacity, taints, GPUs and health.

use crate::meta::{Condition, ObjectMeta};
use crate::pod::TaintEffect;
use crate::quantity::Quantity;
use crate::validation::Errors;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::keys::LABEL_GPU_MODEL;
/// Label every node carries with its own name.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NodeStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// The node's slice of the cluster's pod network, given by the control plane's node IPAM
    /// (or published by an agent started with `--pod-cidr`); its pods' IPs come from it.
    #[serde(rename = "podCIDR", default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    /// Kubernetes' list form of `podCIDR` (its first item is `podCIDR`).
    #[serde(rename = "podCIDRs", default, skip_serializing_if = "Vec::is_empty")]
    pub pod_cidrs: Vec<String>,
}

/// Annotation with the MAC address of the node's VXLAN device (`kumo.vxlan`), which the other
/// nodes put in their FDB and neighbour entries for it (flannel's `backend-data`).
pub const ANNOTATION_VXLAN_MAC: &str = "kumo.dev/vxlan-mac";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeStatus {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeSystemInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_endpoints: Option<DaemonEndpoints>,
    /// The node's GPUs as the agent found them (NVML) or faked them (`--fake-gpus`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuDevice>,
    /// Runtime classes this node can run (`process`, later `runc`, `runsc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtime_classes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSystemInfo {
    #[serde(default)]
    pub kumo_version: String,
    #[serde(default)]
    pub kernel_version: String,
    #[serde(default)]
    pub operating_system: String,
    #[serde(default)]
    pub architecture: String,
}

/// Where the node's agent serves logs (the apiserver proxies `pods/{name}/log` there).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DaemonEndpoints {
    pub agent_endpoint: AgentEndpoint,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentEndpoint {
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuDevice {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    #[serde(default)]
    pub memory_bytes: u64,
    pub healthy: bool,
    /// True for devices made up by `--fake-gpus`; never presented as real.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fake: bool,
}

/// Checks a node's spec.
pub fn validate_node_spec(spec: &NodeSpec, errors: &mut Errors) {
    for (i, t) in spec.taints.iter().enumerate() {
        if !crate::validation::is_qualified_name(&t.key) {
            errors.add(
                format!("spec.taints[{i}].key"),
                format!("Invalid value: {:?}: not a qualified name", t.key),
            );
        }
    }
    if let Some(cidr) = &spec.pod_cidr {
        if let Err(e) = crate::cidr::Cidr::parse(cidr) {
            errors.add("spec.podCIDR", format!("Invalid value: {cidr:?}: {e}"));
        }
    }
    for (i, cidr) in spec.pod_cidrs.iter().enumerate() {
        if let Err(e) = crate::cidr::Cidr::parse(cidr) {
            errors.add(
                format!("spec.podCIDRs[{i}]"),
                format!("Invalid value: {cidr:?}: {e}"),
            );
        }
    }
    if let (Some(first), Some(cidr)) = (spec.pod_cidrs.first(), &spec.pod_cidr) {
        if first != cidr {
            errors.add(
                "spec.podCIDRs[0]",
                format!("Invalid value: {first:?}: must match spec.podCIDR {cidr:?}"),
            );
        }
    }
}

impl NodeSpec {
    /// The node's pod CIDR: `podCIDR`, else the first of `podCIDRs`.
    pub fn pod_cidr(&self) -> Option<&str> {
        self.pod_cidr
            .as_deref()
            .or(self.pod_cidrs.first().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: serde_json::Value, expected: &[&str]) {
        let spec: NodeSpec = serde_json::from_value(spec).unwrap();
        let mut errors = Errors::default();
        validate_node_spec(&spec, &mut errors);
        let got: Vec<String> = match errors.into_result() {
            Ok(()) => Vec::new(),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn pod_cidrs_are_checked() {
        use serde_json::json;
        check(
            json!({"podCIDR": "10.88.1.0/24", "podCIDRs": ["10.88.1.0/24"]}),
            &[],
        );
        check(
            json!({"podCIDR": "10.88.1.1/24"}),
            &["spec.podCIDR: Invalid value: \"10.88.1.1/24\": 10.88.1.1/24 has host bits set"],
        );
        check(
            json!({"podCIDR": "10.88.1.0/24", "podCIDRs": ["10.88.2.0/24", "x"]}),
            &[
                "spec.podCIDRs[1]: Invalid value: \"x\": \"x\" is not a CIDR (want address/prefix)",
                "spec.podCIDRs[0]: Invalid value: \"10.88.2.0/24\": must match spec.podCIDR \"10.88.1.0/24\"",
            ],
        );
    }
}
