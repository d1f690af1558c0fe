//! What the agent's pure sync functions take: the runtime's report of a pod's containers
//! (from `kumo_runtime::state`) and what they need to know about this node.

pub use kumo_runtime::state::{ContainerRuntimeState, PodRuntimeState, RunState, Waiting};
use std::time::Duration;

/// What the pure sync functions need to know about this node.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncParams {
    pub node_name: String,
    /// `status.hostIP` (and `podIP` for process pods).
    pub host_ip: String,
    /// Runtime classes this node can run.
    pub runtime_classes: Vec<String>,
    /// Restart back-off base: `base * 2^restarts`, capped at [`crate::plan::MAX_BACKOFF`].
    pub backoff_base: Duration,
}
