//! [`PodNetworks`]: the per-node manager that gives pods a network and takes it away.

use crate::cni::{self, CniResult, NetParams, Plugin};
use crate::config::{Cidr, NetworkConfig};
use crate::error::NetError;
use crate::exec::{self, Command, Invocation};
use crate::masq;
use crate::netns;
use crate::ports::{require_iptables, PortMapping};
use crate::state::{file_names, PodState, StateDir};
use serde_json::Value;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The uids of networks made ahead of their pods (the warm pool) start with this.
pub const WARM_PREFIX: &str = "warm-";

/// What a pod needs from the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNetRequest {
    /// The pod's uid: the CNI container id and the name of its files.
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// From [`crate::port_mappings`]; empty when the pod publishes no host port.
    pub host_ports: Vec<PortMapping>,
}

/// A pod's network as set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    pub uid: String,
    /// The pod's network namespace: a bind-mounted nsfs file to name in the OCI config's
    /// `linux.namespaces[{type: network}].path` of every container of the pod.
    pub netns_path: PathBuf,
    /// The pod IP (`status.podIP`).
    pub ip: IpAddr,
    /// The bridge's address, the pod's default gateway; the host reaches pods through it.
    pub gateway: IpAddr,
}

/// The pod networks of one node. One instance per state dir.
///
/// Plugin runs of different pods go concurrently, as under containerd, except the first ADD,
/// which creates the bridge and its address (two bridge plugins doing that at once race).
/// With [`NetworkConfig::warm_pool`] set, it keeps that many networks made ahead of their pods
/// ([`PodNetworks::fill_warm_pool`]): a pod without host ports then gets one at once instead of
/// waiting for the plugins (about 40 ms of process starts here).
#[derive(Debug)]
pub struct PodNetworks {
    config: NetworkConfig,
    cidr: Cidr,
    /// The cluster's pod CIDR (every node's pods): not masqueraded.
    cluster: Option<Cidr>,
    path_env: OsString,
    netns_dir: PathBuf,
    ipam_dir: PathBuf,
    states: StateDir,
    plugins: tokio::sync::RwLock<()>,
    bridge_ready: AtomicBool,
    /// Whether this process installed the node's masquerade rules since they were last removed.
    masq: tokio::sync::Mutex<bool>,
    warm: std::sync::Mutex<Warm>,
    /// Held by the one task filling the pool; [`PodNetworks::drain_warm_pool`] waits for it.
    filler: tokio::sync::Mutex<()>,
    warm_counter: AtomicU64,
}

/// Networks made ahead of their pods.
#[derive(Debug, Default)]
struct Warm {
    ready: Vec<PodState>,
    /// Leftovers of an earlier run were removed.
    swept: bool,
    /// Drained for good (the agent is stopping): nothing more is made.
    closed: bool,
}

/// A read guard for most plugin runs, a write guard for the one that makes the bridge.
enum PluginGuard<'a> {
    Shared {
        _guard: tokio::sync::RwLockReadGuard<'a, ()>,
    },
    Exclusive {
        _guard: tokio::sync::RwLockWriteGuard<'a, ()>,
    },
}

impl PodNetworks {
    /// Checks the config and creates the state dirs (`netns/`, `pods/`, `ipam/`). Nothing is
    /// created on the host until the first [`PodNetworks::setup`] (the bridge plugin makes the
    /// bridge then).
    pub fn new(config: NetworkConfig) -> Result<Self, NetError> {
        let cidr = config.validate()?;
        let cluster = config.cluster()?;
        let mut config = config;
        std::fs::create_dir_all(&config.state_dir)
            .map_err(|e| NetError::io("creating", &config.state_dir, e))?;
        // Namespace paths go into OCI configs: make them absolute.
        config.state_dir = std::fs::canonicalize(&config.state_dir)
            .map_err(|e| NetError::io("resolving", &config.state_dir, e))?;
        let dir = |name: &str| -> Result<PathBuf, NetError> {
            let d = config.state_dir.join(name);
            std::fs::create_dir_all(&d).map_err(|e| NetError::io("creating", &d, e))?;
            Ok(d)
        };
        Ok(PodNetworks {
            netns_dir: dir("netns")?,
            ipam_dir: dir("ipam")?,
            states: StateDir::new(dir("pods")?),
            path_env: exec::plugin_path_env(std::env::var_os("PATH").as_deref()),
            cidr,
            cluster,
            config,
            plugins: tokio::sync::RwLock::new(()),
            bridge_ready: AtomicBool::new(false),
            masq: tokio::sync::Mutex::new(false),
            warm: std::sync::Mutex::new(Warm::default()),
            filler: tokio::sync::Mutex::new(()),
            warm_counter: AtomicU64::new(0),
        })
    }

    async fn plugin_guard(&self) -> PluginGuard<'_> {
        if self.bridge_ready.load(Ordering::Acquire) {
            PluginGuard::Shared {
                _guard: self.plugins.read().await,
            }
        } else {
            PluginGuard::Exclusive {
                _guard: self.plugins.write().await,
            }
        }
    }

    fn lock_warm(&self) -> std::sync::MutexGuard<'_, Warm> {
        self.warm.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The config in use (with `state_dir` made absolute).
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Gives the pod a network: one from the warm pool when it has no host ports and one is
    /// ready, else a new namespace and CNI ADD (loopback, then the bridge network with
    /// host-local IPAM and, when the pod has host ports, portmap). Idempotent for a pod that
    /// already has one (returns the existing). On failure nothing of the pod's network is left.
    pub async fn setup(&self, pod: &PodNetRequest) -> Result<PodNetwork, NetError> {
        check_uid(&pod.uid)?;
        require_iptables(&pod.host_ports, &self.path_env, &self.config.node_name)?;
        if pod.host_ports.is_empty() && self.states.read(&pod.uid)?.is_none() {
            if let Some(net) = self.take_warm(pod)? {
                return Ok(net);
            }
        }
        self.make(PodState {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            netns_path: self.netns_dir.join(&pod.uid),
            host_ports: pod.host_ports.clone(),
            result: None,
            cni_id: None,
            plugin_masq: false,
        })
        .await
    }

    /// Makes the network `state` describes (or returns the one already recorded for its uid).
    async fn make(&self, state: PodState) -> Result<PodNetwork, NetError> {
        let _guard = self.plugin_guard().await;
        if let Some(old) = self.states.read(&state.uid)? {
            if let Some(net) = self.network_of(&old) {
                if netns::is_netns(&net.netns_path) {
                    return Ok(net);
                }
            }
            // Half made (a crash mid-setup) or stale (a reboot): start afresh.
            self.undo(&old).await?;
        }
        // The record first, so that whatever follows can be undone after a crash.
        self.states.write(&state)?;
        let uid = state.uid.clone();
        match self.add(state).await {
            Ok(net) => {
                self.bridge_ready.store(true, Ordering::Release);
                Ok(net)
            }
            Err((err, state)) => {
                if let Err(undo) = self.undo(&state).await {
                    tracing::warn!(%uid, error = %undo, "cleaning up a failed pod network setup");
                }
                if let Err(e) = self.release_masq_if_unused().await {
                    tracing::warn!(%uid, error = %e, "removing the masquerade rules after a failed setup");
                }
                Err(err)
            }
        }
    }

    /// Hands a warm network to `pod`: its namespace is pinned at the pod's own file, the pod's
    /// record takes over the network (and its CNI container id), then the warm record and file
    /// go. A crash in between leaves a warm record that the next sweep sees claimed.
    fn take_warm(&self, pod: &PodNetRequest) -> Result<Option<PodNetwork>, NetError> {
        let warm = loop {
            let Some(warm) = self.lock_warm().ready.pop() else {
                return Ok(None);
            };
            // Removed underneath us (only by hand: one agent owns a state dir).
            if netns::is_netns(&warm.netns_path) {
                break warm;
            }
        };
        let netns_path = self.netns_dir.join(&pod.uid);
        if netns_path.exists() {
            // A stray file of a half-made network: the slow path undoes and redoes it.
            self.lock_warm().ready.push(warm);
            return Ok(None);
        }
        let state = PodState {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            netns_path,
            host_ports: Vec::new(),
            result: warm.result.clone(),
            cni_id: Some(warm.cni_id().to_string()),
            plugin_masq: warm.plugin_masq,
        };
        let Some(net) = self.network_of(&state) else {
            // Not a usable network after all: the next start's sweep removes it.
            return Ok(None);
        };
        if let Err(e) = netns::rebind(&warm.netns_path, &state.netns_path) {
            self.lock_warm().ready.push(warm);
            return Err(e);
        }
        if let Err(e) = self.states.write_unsynced(&state) {
            let _ = netns::remove(&state.netns_path);
            self.lock_warm().ready.push(warm);
            return Err(e);
        }
        let forget = self
            .states
            .remove(&warm.uid)
            .and_then(|()| netns::remove(&warm.netns_path));
        if let Err(e) = forget {
            tracing::warn!(uid = %warm.uid, error = %e, "removing what is left of a taken warm network");
        }
        tracing::info!(uid = %pod.uid, ip = %net.ip, warm = %warm.uid, "pod network taken from the warm pool");
        Ok(Some(net))
    }

    /// Makes warm networks until the pool holds [`NetworkConfig::warm_pool`] of them. Meant to
    /// be spawned after each setup; a call while another fills returns at once. The first call
    /// removes warm networks an earlier run left behind.
    pub async fn fill_warm_pool(&self) {
        let size = self.config.warm_pool;
        if size == 0 {
            return;
        }
        let Ok(_filling) = self.filler.try_lock() else {
            return;
        };
        let sweep = {
            let mut w = self.lock_warm();
            if w.closed {
                return;
            }
            !std::mem::replace(&mut w.swept, true)
        };
        if sweep {
            self.sweep_warm().await;
        }
        loop {
            if self.lock_warm().ready.len() >= size {
                return;
            }
            let n = self.warm_counter.fetch_add(1, Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default();
            let uid = format!(
                "{WARM_PREFIX}{:x}{n:x}",
                nanos ^ u64::from(std::process::id())
            );
            let made = self
                .make(PodState {
                    uid: uid.clone(),
                    namespace: String::new(),
                    name: String::new(),
                    netns_path: self.netns_dir.join(&uid),
                    host_ports: Vec::new(),
                    result: None,
                    cni_id: None,
                    plugin_masq: false,
                })
                .await;
            if let Err(e) = made {
                tracing::warn!(error = %e, "making a warm pod network");
                return;
            }
            match self.states.read(&uid) {
                Ok(Some(state)) if self.network_of(&state).is_some() => {
                    let kept = {
                        let mut w = self.lock_warm();
                        if !w.closed {
                            w.ready.push(state);
                        }
                        !w.closed
                    };
                    if !kept {
                        let _ = self.teardown(&uid).await;
                        return;
                    }
                }
                _ => {
                    let _ = self.teardown(&uid).await;
                    return;
                }
            }
        }
    }

    /// Tears down every warm network and stops making more (the agent is stopping). Waits for
    /// a fill in progress.
    pub async fn drain_warm_pool(&self) {
        self.lock_warm().closed = true;
        let _filling = self.filler.lock().await;
        let ready = std::mem::take(&mut self.lock_warm().ready);
        for warm in ready {
            if let Err(e) = self.teardown(&warm.uid).await {
                tracing::warn!(uid = %warm.uid, error = %e, "tearing down a warm pod network");
            }
        }
    }

    /// How many warm networks are ready.
    pub fn warm_ready(&self) -> usize {
        self.lock_warm().ready.len()
    }

    /// Removes the warm networks of an earlier run (recorded or only a namespace file).
    async fn sweep_warm(&self) {
        let mut uids = self.states.uids().unwrap_or_default();
        uids.extend(file_names(&self.netns_dir).unwrap_or_default());
        uids.sort();
        uids.dedup();
        for uid in uids.iter().filter(|u| u.starts_with(WARM_PREFIX)) {
            if let Err(e) = self.teardown(uid).await {
                tracing::warn!(%uid, error = %e, "removing a warm pod network left by an earlier run");
            }
        }
    }

    /// Whether a pod's record names `warm_uid` as its CNI id (it took that warm network and a
    /// crash came before the warm record was removed).
    fn claimed(&self, warm_uid: &str) -> bool {
        self.states.uids().unwrap_or_default().iter().any(|uid| {
            uid != warm_uid
                && self
                    .states
                    .read(uid)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.cni_id() == warm_uid)
        })
    }

    /// Installs the node's masquerade rules once (see [`crate::masq`]).
    async fn ensure_masq(&self) -> Result<(), NetError> {
        let mut installed = self.masq.lock().await;
        if !*installed {
            masq::ensure(&self.config.bridge, self.cidr, self.cluster, &self.path_env).await?;
            *installed = true;
        }
        Ok(())
    }

    /// Removes the node's masquerade rules when no pod network is left.
    async fn release_masq_if_unused(&self) -> Result<(), NetError> {
        let mut installed = self.masq.lock().await;
        if !self.states.uids()?.is_empty() {
            return Ok(());
        }
        masq::remove(&self.config.bridge, self.cidr, &self.path_env).await?;
        *installed = false;
        Ok(())
    }

    async fn add(&self, mut state: PodState) -> Result<PodNetwork, (NetError, PodState)> {
        if let Err(e) = self.ensure_masq().await {
            return Err((e, state));
        }
        if let Err(e) = netns::create(&state.netns_path) {
            return Err((e, state));
        }
        let mut prev: Option<Value> = None;
        for plugin in plugins(&state.host_ports) {
            let chained = if plugin == Plugin::Loopback {
                None
            } else {
                prev.as_ref()
            };
            match self.run(plugin, Command::Add, &state, chained).await {
                Ok(result) if plugin != Plugin::Loopback => prev = Some(result),
                Ok(_) => {}
                Err(e) => return Err((e, state)),
            }
        }
        state.result = prev;
        if let Err(e) = self.states.write(&state) {
            return Err((e, state));
        }
        match self.network_of(&state) {
            Some(net) => {
                tracing::info!(uid = %state.uid, ip = %net.ip, "pod network set up");
                Ok(net)
            }
            None => Err((
                NetError::PluginOutput {
                    plugin: Plugin::Bridge.name().to_string(),
                    command: "ADD".to_string(),
                    message: "result holds no ip address".to_string(),
                },
                state,
            )),
        }
    }

    /// CNI DEL, delete the netns, release the IP, remove cached state. Idempotent; works after
    /// an agent restart (state on disk). On a plugin error the state is kept for a retry.
    pub async fn teardown(&self, uid: &str) -> Result<(), NetError> {
        check_uid(uid)?;
        {
            let _guard = self.plugin_guard().await;
            match self.states.read(uid)? {
                // A warm record whose network a pod took (a crash came between the two
                // writes): the pod's record owns the network now.
                Some(state) if uid.starts_with(WARM_PREFIX) && self.claimed(uid) => {
                    self.states.remove(uid)?;
                    netns::remove(&state.netns_path)?;
                }
                Some(state) => self.undo(&state).await?,
                // Nothing recorded; a namespace file without a record is removed all the same.
                None => netns::remove(&self.netns_dir.join(uid))?,
            }
        }
        self.release_masq_if_unused().await
    }

    /// Undoes `state`: DEL in the reverse order of ADD, then the namespace, then the record.
    async fn undo(&self, state: &PodState) -> Result<(), NetError> {
        for plugin in plugins(&state.host_ports).into_iter().rev() {
            let prev = if plugin == Plugin::Loopback {
                None
            } else {
                state.result.as_ref()
            };
            match self.run(plugin, Command::Del, state, prev).await {
                // A plugin that is not installed has added nothing (or was removed since, and
                // cannot undo anything): blocking the rest of the teardown would only leak more.
                Err(e @ NetError::PluginNotFound { .. }) => {
                    tracing::warn!(uid = %state.uid, error = %e, "skipping cni DEL");
                }
                other => {
                    other?;
                }
            }
        }
        netns::remove(&state.netns_path)?;
        self.states.remove(&state.uid)?;
        tracing::info!(uid = %state.uid, "pod network torn down");
        Ok(())
    }

    async fn run(
        &self,
        plugin: Plugin,
        command: Command,
        state: &PodState,
        prev: Option<&Value>,
    ) -> Result<Value, NetError> {
        let params = NetParams {
            bridge: &self.config.bridge,
            cidr: self.cidr,
            mtu: self.config.mtu,
            ipam_dir: &self.ipam_dir,
            plugin_masq: state.plugin_masq,
        };
        let config = cni::network_config(plugin, &params, &state.host_ports, prev);
        // A namespace that is gone (a reboot unmounts it) is passed as none: plugins then only
        // release what lives outside it (the IP lease, iptables rules).
        let netns: &OsStr = if command == Command::Add || netns::is_netns(&state.netns_path) {
            state.netns_path.as_os_str()
        } else {
            OsStr::new("")
        };
        let inv = Invocation {
            plugin,
            command,
            container_id: state.cni_id(),
            netns,
            config: &config,
        };
        exec::run(&self.config.cni_bin_dir, &self.path_env, &inv).await
    }

    /// Pods that have networks (for re-adoption after an agent restart, and for cleaning
    /// leftovers of pods that no longer exist); warm networks are not listed. Records that
    /// cannot be read are skipped.
    pub fn list(&self) -> Vec<PodNetwork> {
        self.states
            .uids()
            .unwrap_or_default()
            .iter()
            .filter(|uid| !uid.starts_with(WARM_PREFIX))
            .filter_map(|uid| self.states.read(uid).ok().flatten())
            .filter_map(|state| self.network_of(&state))
            .collect()
    }

    /// Tears down the network of every pod not in `live_uids` (recorded ones, half-made ones and
    /// stray namespace files), returning the uids torn down. Keeps going after a failure and
    /// returns the first error at the end.
    pub async fn cleanup_orphans(
        &self,
        live_uids: &HashSet<String>,
    ) -> Result<Vec<String>, NetError> {
        let mut uids: Vec<String> = self.states.uids()?;
        uids.extend(file_names(&self.netns_dir)?);
        uids.sort();
        uids.dedup();
        let ready: HashSet<String> = self
            .lock_warm()
            .ready
            .iter()
            .map(|w| w.uid.clone())
            .collect();
        uids.retain(|uid| !ready.contains(uid));
        let mut removed = Vec::new();
        let mut first_error = None;
        for uid in uids.into_iter().filter(|u| !live_uids.contains(u)) {
            match self.teardown(&uid).await {
                Ok(()) => removed.push(uid),
                Err(e) => {
                    tracing::warn!(%uid, error = %e, "cleaning up an orphaned pod network");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(removed), Err)
    }

    fn network_of(&self, state: &PodState) -> Option<PodNetwork> {
        let result: CniResult = serde_json::from_value(state.result.clone()?).ok()?;
        let (ip, gateway) = result.pod_ip()?;
        Some(PodNetwork {
            uid: state.uid.clone(),
            netns_path: state.netns_path.clone(),
            ip,
            gateway: gateway.unwrap_or_else(|| self.cidr.first_host()),
        })
    }

    /// Where the pod's network namespace file is (whether or not it exists).
    pub fn netns_path(&self, uid: &str) -> PathBuf {
        self.netns_dir.join(uid)
    }

    /// The host-local lease directory (`<state_dir>/ipam`).
    pub fn ipam_dir(&self) -> &Path {
        &self.ipam_dir
    }
}

/// The plugins of a pod's networks, in ADD order.
fn plugins(host_ports: &[PortMapping]) -> Vec<Plugin> {
    let mut p = vec![Plugin::Loopback, Plugin::Bridge];
    if !host_ports.is_empty() {
        p.push(Plugin::Portmap);
    }
    p
}

/// A uid must be a CNI container id (`[A-Za-z0-9][A-Za-z0-9_.-]*`) and a plain file name.
fn check_uid(uid: &str) -> Result<(), NetError> {
    let invalid = |message: &str| NetError::InvalidUid {
        uid: uid.to_string(),
        message: message.to_string(),
    };
    let mut chars = uid.chars();
    match chars.next() {
        None => Err(invalid("must not be empty")),
        _ if uid.len() > 128 => Err(invalid("must be at most 128 characters")),
        Some(c) if !c.is_ascii_alphanumeric() => Err(invalid("must start with a letter or digit")),
        _ if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) => {
            Err(invalid("may hold only letters, digits, '_', '.' and '-'"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids() {
        let check = |uid: &str, expected: Result<(), &str>| {
            assert_eq!(
                check_uid(uid)
                    .map_err(|e| e.to_string())
                    .as_ref()
                    .map_err(String::as_str),
                expected.as_ref().map_err(|e| *e)
            )
        };
        check("6f1c2a4e-0b7d-4c55-9a43-2f1e0e8d9c10", Ok(()));
        check("pod_1.a", Ok(()));
        check("", Err("invalid pod uid \"\": must not be empty"));
        check(
            "../x",
            Err("invalid pod uid \"../x\": must start with a letter or digit"),
        );
        check(
            "a/b",
            Err("invalid pod uid \"a/b\": may hold only letters, digits, '_', '.' and '-'"),
        );
        check(
            &"a".repeat(129),
            Err(&format!(
                "invalid pod uid {:?}: must be at most 128 characters",
                "a".repeat(129)
            )),
        );
    }

    #[test]
    fn plugin_order() {
        assert_eq!(plugins(&[]), [Plugin::Loopback, Plugin::Bridge]);
        let one = [PortMapping {
            host_port: 1,
            container_port: 1,
            protocol: crate::Protocol::Tcp,
        }];
        assert_eq!(
            plugins(&one),
            [Plugin::Loopback, Plugin::Bridge, Plugin::Portmap]
        );
    }
}
