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
    /// The cluster CA (PEM): the endpoint accepts only clients with a certificate it signed
    /// (the API server's), as kubelet's `--client-ca-file`; pods get it as their service
    /// account's `ca.crt`.
    pub cluster_ca_pem: String,
    /// The endpoint's request-header and idle timeouts (its TLS handshake included) and its
    /// cap on connections that have not completed a request.
    pub endpoint_limits: kumo_serve::Limits,
    /// How OCI containers are run.
    pub containers: ContainerConfig,
}

/// The OCI runtimes, images, pod network and what the node allows pods to do.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    /// The runc binary; `None` looks for `runc` on `PATH`, `/usr/sbin` and `/usr/bin`.
    pub runc: Option<PathBuf>,
    /// The runsc (gVisor) binary; `None` looks for it likewise.
    pub runsc: Option<PathBuf>,
    /// runsc's global flags; empty means [`DEFAULT_RUNSC_ARGS`].
    pub runsc_args: Vec<String>,
    /// Registries reached over plain HTTP besides loopback ones (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// Host paths under which hostPath volumes are allowed (`--allow-host-path`).
    pub allowed_host_paths: Vec<PathBuf>,
    /// Directories besides the agent's own that no hostPath may reach into or contain (the
    /// server's data dir under `kumo up`, the client config's directory).
    pub protected_host_paths: Vec<PathBuf>,
    /// Whether privileged containers may run (`--allow-privileged`).
    pub allow_privileged: bool,
    /// The pod network's CIDR (`--pod-cidr`); `None` for kumo-net's default (10.88.0.0/16).
    pub pod_cidr: Option<String>,
    /// The cluster's pod CIDR (every node's pod CIDR): pod traffic to it is not masqueraded.
    pub cluster_cidr: Option<String>,
    /// How this node reaches other nodes' pods (`--pod-network-backend`); `None`: it does not
    /// (one node: `kumo up`).
    pub pod_network_backend: Option<kumo_net::Backend>,
    /// The MTU of pods' interfaces; `None` for the bridge plugin's default.
    pub pod_mtu: Option<u32>,
    /// The pod network's bridge; `None` for kumo-net's default (`kumo0`).
    pub bridge: Option<String>,
    /// Run OCI pods without a pod network (each container gets an empty namespace).
    pub no_pod_network: bool,
    /// Pod networks kept made ahead of their pods once the node runs a container pod
    /// (`--pod-network-pool`).
    pub pod_network_pool: usize,
    /// When unused images are removed.
    pub image_gc: crate::image_gc::GcPolicy,
    /// Directories of CDI specs, lowest priority first (`--cdi-spec-dir`); empty for the CDI
    /// defaults, `/etc/cdi` and `/var/run/cdi`.
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// The cgroup every pod cgroup of the node goes under (`--cgroup-parent`, default `kumo`).
    pub cgroup_parent: kumo_runtime::cgroup_parent::CgroupParent,
}

/// runsc's flags on these machines: the ptrace platform (KVM hangs here; systrap is newer than
/// the packaged runsc) and the host network stack inside the pod's namespace (the packaged
/// runsc's own stack refuses to start on kernels that expose `/proc/sys/net/core/rmem_default`
/// in every namespace: "cannot run with network enabled in root network namespace").
pub const DEFAULT_RUNSC_ARGS: [&str; 2] = ["--platform=ptrace", "--network=host"];

/// The OCI runtime binary `name`: `configured`, else the first found on `PATH`, `/usr/sbin`,
/// `/usr/bin`.
pub fn find_runtime(name: &str, configured: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(p) = configured {
        return p.is_file().then(|| p.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
