//! Pod sandboxes: what the containers of a pod share — its network namespace and IP, its
//! `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` (OCI pods), and its volumes (every pod
//! that has some) — made before the first container starts and taken down when the pod goes.
//!
//! ```text
//! <dir>/<uid>/pod.json        which pod (written first, so a half-made sandbox is found again)
//! <dir>/<uid>/sandbox.json    the finished sandbox (SandboxInfo)
//! <dir>/<uid>/etc/            hosts, resolv.conf, hostname
//! <dir>/<uid>/volumes/<name>  emptyDir volumes (a tmpfs mount for medium Memory)
//! <dir>/<uid>/hostpaths/<name> hostPath volumes: bind mounts of what `host_path::open` opened
//! <dir>/<uid>/serviceaccount/ the pod's service-account token, ca.crt and namespace
//! ```
//!
//! `<dir>` is 0700: what is in it (tokens included) reaches containers through their mounts only.

use crate::host_path::{HostPathPolicy, OpenedHostPath};
use kumo_api::pod::{HostPathType, Volume};
use kumo_api::Pod;
use kumo_runtime::layout::is_safe_component;
use kumo_runtime::mounts::remove_tree;
use kumo_runtime::record::{read_json, write_json, PodRecord};
use kumo_runtime::sandbox::PodSandboxes;
pub use kumo_runtime::sandbox::SandboxInfo;
use kumo_runtime::sys::RealSys;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A pod's network as a provider made it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNet {
    /// The namespace file to join; `None`: each container gets a fresh namespace with `lo` only.
    pub netns_path: Option<PathBuf>,
    pub ip: Option<IpAddr>,
}

/// Gives pods a network and takes it away.
#[async_trait::async_trait]
pub trait NetworkProvider: Send + Sync + 'static {
    /// Sets up the pod's network; idempotent; leaves nothing behind when it fails.
    async fn setup(&self, pod: &Pod) -> Result<PodNet, String>;
    /// Removes the pod's network; idempotent.
    async fn teardown(&self, uid: &str) -> Result<(), String>;
    /// The agent is stopping: remove what was made ahead of pods (pods' networks stay).
    async fn shutdown(&self) {}
}

/// No pod network: containers get their own empty network namespaces (tests, isolated jobs).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNetwork;

#[async_trait::async_trait]
impl NetworkProvider for NoNetwork {
    async fn setup(&self, _pod: &Pod) -> Result<PodNet, String> {
        Ok(PodNet::default())
    }
    async fn teardown(&self, _uid: &str) -> Result<(), String> {
        Ok(())
    }
}

/// The CNI bridge network of kumo-net. After each setup the warm pool is topped up in the
/// background, so the next pod does not wait for the plugins.
pub struct CniNetwork(pub Arc<kumo_net::PodNetworks>);

#[async_trait::async_trait]
impl NetworkProvider for CniNetwork {
    async fn setup(&self, pod: &Pod) -> Result<PodNet, String> {
        let ports = pod.spec.containers.iter().map(|c| {
            c.ports
                .iter()
                .map(|p| kumo_net::PortSpec {
                    container_port: p.container_port,
                    host_port: p.host_port,
                    protocol: p.protocol.clone(),
                })
                .collect::<Vec<_>>()
        });
        let host_ports = kumo_net::port_mappings(ports).map_err(|e| e.to_string())?;
        let req = kumo_net::PodNetRequest {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.ns().to_string(),
            name: pod.metadata.name.clone(),
            host_ports,
        };
        let net = self.0.setup(&req).await.map_err(|e| e.to_string())?;
        let nets = self.0.clone();
        tokio::spawn(async move { nets.fill_warm_pool().await });
        Ok(PodNet {
            netns_path: Some(net.netns_path),
            ip: Some(net.ip),
        })
    }

    async fn teardown(&self, uid: &str) -> Result<(), String> {
        self.0.teardown(uid).await.map_err(|e| e.to_string())
    }

    async fn shutdown(&self) {
        self.0.drain_warm_pool().await;
    }
}

/// Why a sandbox could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The pod asks for something this node refuses (`CreateContainerConfigError`).
    #[error("{0}")]
    Config(String),
    /// Setting it up failed; retried with back-off.
    #[error("{0}")]
    Failed(String),
}

impl PodSandboxes for Sandboxes {
    fn get(&self, uid: &str) -> Option<SandboxInfo> {
        Sandboxes::get(self, uid)
    }
}

/// The sandboxes of a node.
pub struct Sandboxes {
    dir: PathBuf,
    network: Arc<dyn NetworkProvider>,
    host_paths: HostPathPolicy,
}

impl Sandboxes {
    pub fn new(
        dir: PathBuf,
        network: Arc<dyn NetworkProvider>,
        host_paths: HostPathPolicy,
    ) -> Self {
        // Made now (not with the first sandbox) so that its subdirectories are spread out.
        if std::fs::create_dir_all(&dir).is_ok() {
            kumo_runtime::layout::spread_subdirs(&dir);
            use std::os::unix::fs::PermissionsExt;
            if let Err(e) = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot make the sandbox dir private");
            }
        }
        Sandboxes {
            dir,
            network,
            host_paths,
        }
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.dir.join(uid)
    }

    /// The directory of pod `uid`'s service-account token files, if the uid is usable.
    pub fn token_dir(&self, uid: &str) -> Option<PathBuf> {
        is_safe_component(uid).then(|| self.pod_dir(uid).join("serviceaccount"))
    }

    /// Makes [`Sandboxes::token_dir`] for `pod` ahead of its sandbox, with the pod's record, so
    /// that the sweep of gone pods' sandboxes removes it too.
    pub fn make_token_dir(&self, pod: &Pod) -> Result<PathBuf, SandboxError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let dir = self.token_dir(&uid).ok_or_else(|| {
            SandboxError::Config(format!("pod {:?} has no usable uid", pod.metadata.name))
        })?;
        let failed = |p: &Path, e: std::io::Error| {
            SandboxError::Failed(format!("create {}: {e}", p.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| failed(&dir, e))?;
        let rec_path = self.pod_dir(&uid).join("pod.json");
        if !rec_path.exists() {
            let record = PodRecord {
                namespace: pod.metadata.ns().to_string(),
                name: pod.metadata.name.clone(),
                uid,
            };
            write_json(&rec_path, &record).map_err(|e| failed(&rec_path, e))?;
        }
        Ok(dir)
    }

    /// The finished sandbox of pod `uid`, if any.
    pub fn get(&self, uid: &str) -> Option<SandboxInfo> {
        if !is_safe_component(uid) {
            return None;
        }
        read_json(&self.pod_dir(uid).join("sandbox.json"))
            .ok()
            .flatten()
    }

    /// The pods with a sandbox (finished or half-made).
    pub fn pods(&self) -> Vec<PodRecord> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| read_json(&e.path().join("pod.json")).ok().flatten())
            .collect()
    }

    /// Makes the pod's sandbox, or returns the one made before. On failure nothing is left.
    pub async fn ensure(&self, pod: &Pod) -> Result<SandboxInfo, SandboxError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if !is_safe_component(&uid) {
            return Err(SandboxError::Config(format!(
                "pod {:?} has no usable uid",
                pod.metadata.name
            )));
        }
        if let Some(info) = self.get(&uid) {
            return Ok(info);
        }
        // Checked before anything is made.
        let host_paths = self.host_paths(&pod.spec.volumes)?;
        let dir = self.pod_dir(&uid);
        let made = self.make(pod, &uid, &dir, host_paths).await;
        if made.is_err() {
            if let Err(e) = self.teardown(&uid).await {
                tracing::warn!(%uid, error = %e, "cannot undo a half-made sandbox");
            }
        }
        made
    }

    async fn make(
        &self,
        pod: &Pod,
        uid: &str,
        dir: &Path,
        host_paths: BTreeMap<String, OpenedHostPath>,
    ) -> Result<SandboxInfo, SandboxError> {
        let io = |what: &str, p: &Path, e: std::io::Error| {
            SandboxError::Failed(format!("{what} {}: {e}", p.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let record = PodRecord {
            namespace: pod.metadata.ns().to_string(),
            name: pod.metadata.name.clone(),
            uid: uid.to_string(),
        };
        let rec_path = dir.join("pod.json");
        write_json(&rec_path, &record).map_err(|e| io("write", &rec_path, e))?;
        // Process and hostNetwork pods share the host's network: their sandbox holds only their
        // volumes and /etc files.
        let net = if crate::plan::is_process_pod(pod) || pod.spec.host_network == Some(true) {
            PodNet::default()
        } else {
            self.network.setup(pod).await.map_err(|e| {
                SandboxError::Failed(format!("failed to set up the pod network: {e}"))
            })?
        };
        let etc = dir.join("etc");
        let etc_files = write_etc_files(&etc, &pod.metadata.name, net.ip)?;
        let mut volumes = BTreeMap::new();
        for (name, opened) in &host_paths {
            let target = dir.join("hostpaths").join(name);
            crate::host_path::mount_at(opened, &target).map_err(SandboxError::Failed)?;
            volumes.insert(name.clone(), target);
        }
        for v in &pod.spec.volumes {
            if let Some(d) = &v.node_dir {
                volumes.insert(v.name.clone(), d.0.clone());
            }
        }
        for v in &pod.spec.volumes {
            let Some(e) = &v.empty_dir else { continue };
            let path = dir.join("volumes").join(&v.name);
            std::fs::create_dir_all(&path).map_err(|e| io("create", &path, e))?;
            if e.is_memory() {
                let mut data = "mode=1777".to_string();
                if let Some(q) = &e.size_limit {
                    data.push_str(&format!(",size={}", q.units_ceil().max(0)));
                }
                nix::mount::mount(
                    Some("tmpfs"),
                    &path,
                    Some("tmpfs"),
                    nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                    Some(data.as_str()),
                )
                .map_err(|e| {
                    SandboxError::Failed(format!("mount tmpfs for volume {:?}: {e}", v.name))
                })?;
            }
            volumes.insert(v.name.clone(), path);
        }
        let info = SandboxInfo {
            uid: uid.to_string(),
            netns_path: net.netns_path,
            ip: net.ip,
            etc_files,
            volumes,
        };
        let path = dir.join("sandbox.json");
        write_json(&path, &info).map_err(|e| io("write", &path, e))?;
        Ok(info)
    }

    /// The pod's hostPath volumes, each opened beneath its allowed root (creating what
    /// `*OrCreate` asks for) and checked against its `type`; mounted once the sandbox's
    /// directory exists.
    fn host_paths(
        &self,
        volumes: &[Volume],
    ) -> Result<BTreeMap<String, OpenedHostPath>, SandboxError> {
        let mut out = BTreeMap::new();
        for v in volumes {
            let Some(h) = &v.host_path else { continue };
            let opened = crate::host_path::open(
                &self.host_paths,
                &h.path,
                h.type_.unwrap_or(HostPathType::Unset),
            )
            .map_err(|m| {
                SandboxError::Config(format!("hostPath {:?} of volume {:?} {m}", h.path, v.name))
            })?;
            out.insert(v.name.clone(), opened);
        }
        Ok(out)
    }

    /// The agent is stopping: the network provider removes what it made ahead of pods.
    pub async fn shutdown(&self) {
        self.network.shutdown().await;
    }

    /// Removes the pod's sandbox: its network, its mounts and its directory. Goes on after a
    /// failure and returns the first.
    pub async fn teardown(&self, uid: &str) -> Result<(), String> {
        if !is_safe_component(uid) {
            return Err(format!("invalid pod uid {uid:?}"));
        }
        let mut first = None;
        if let Err(e) = self.network.teardown(uid).await {
            first.get_or_insert(format!("tear down the pod network: {e}"));
        }
        if let Err(e) = remove_tree(&RealSys, &self.pod_dir(uid)) {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }
}

/// Writes the pod's `hosts`, `resolv.conf` and `hostname` into `dir`: kumo-net's files when
/// the pod has an IP, else a loopback-only `hosts` and an empty `resolv.conf`.
fn write_etc_files(
    dir: &Path,
    pod_name: &str,
    ip: Option<IpAddr>,
) -> Result<Vec<(String, PathBuf)>, SandboxError> {
    let (hosts, resolv, hostname) = match ip {
        Some(ip) => {
            let f = kumo_net::write_pod_files(dir, pod_name, ip)
                .map_err(|e| SandboxError::Failed(format!("write the pod's /etc files: {e}")))?;
            (f.hosts, f.resolv_conf, f.hostname)
        }
        None => {
            let write = |name: &str, text: String| -> Result<PathBuf, SandboxError> {
                let p = dir.join(name);
                std::fs::write(&p, text)
                    .map_err(|e| SandboxError::Failed(format!("write {}: {e}", p.display())))?;
                Ok(p)
            };
            std::fs::create_dir_all(dir)
                .map_err(|e| SandboxError::Failed(format!("create {}: {e}", dir.display())))?;
            let short: String = pod_name.chars().take(63).collect();
            (
                write(
                    "hosts",
                    format!(
                        "127.0.0.1\tlocalhost {short}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                    ),
                )?,
                write("resolv.conf", String::new())?,
                write("hostname", format!("{short}\n"))?,
            )
        }
    };
    Ok(vec![
        ("/etc/hosts".to_string(), hosts),
        ("/etc/resolv.conf".to_string(), resolv),
        ("/etc/hostname".to_string(), hostname),
    ])
}
