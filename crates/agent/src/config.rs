//! The agent's configuration, as the `kumo agent` and `kumo up` commands fill it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default restart back-off base (doubling per restart, capped at five minutes).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Default interval between node heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name.
    pub node_name: String,
    /// Agent state: `<data_dir>/pods/<uid>/...`, container logs included.
    pub data_dir: PathBuf,
    /// Labels added to the Node (besides `kubernetes.io/hostname` and the GPU model).
    pub labels: BTreeMap<String, String>,
    /// Made-up GPUs to report instead of asking NVML (0: real discovery).
    pub fake_gpus: u32,
    /// Where the agent's HTTP endpoint (logs) listens; port 0 picks one.
    pub listen: SocketAddr,
    /// The IP the apiserver uses to reach `listen` (and the pods' hostIP/podIP).
    pub advertise_address: String,
    /// Restart back-off base.
    pub backoff_base: Duration,
    pub heartbeat_interval: Duration,
    /// The kumo binary, run as `<shim_exe> shim ...` to supervise each container.
    pub shim_exe: PathBuf,
    /// The agent's API token; the log endpoint requires it as a bearer token.
    pub token: String,
}
