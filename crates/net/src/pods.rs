//! [`PodNetworks`]: the per-node manager that gives pods a network and takes it away.

use crate::cni::{self, CniResult, NetParams, Plugin};
use crate::config::{Cidr, NetworkConfig};
use crate::error::NetError;
use crate::exec::{self, Command, Invocation};
use crate::netns;
use crate::ports::{require_iptables, PortMapping};
use crate::state::{file_names, PodState, StateDir};
use serde_json::Value;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

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

/// The pod networks of one node. One instance per state dir; its operations are serialized
/// (the bridge plugin is not safe to run concurrently for the same bridge).
#[derive(Debug)]
pub struct PodNetworks {
    config: NetworkConfig,
    cidr: Cidr,
    path_env: OsString,
    netns_dir: PathBuf,
    ipam_dir: PathBuf,
    states: StateDir,
    lock: tokio::sync::Mutex<()>,
}

impl PodNetworks {
    /// Checks the config and creates the state dirs (`netns/`, `pods/`, `ipam/`). Nothing is
    /// created on the host until the first [`PodNetworks::setup`] (the bridge plugin makes the
    /// bridge then).
    pub fn new(config: NetworkConfig) -> Result<Self, NetError> {
        let cidr = config.validate()?;
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
            config,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The config in use (with `state_dir` made absolute).
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Creates the pod's network namespace and runs CNI ADD (loopback, then the bridge network
    /// with host-local IPAM and, when the pod has host ports, portmap). Idempotent for a pod that
    /// already has one (returns the existing). On failure nothing of the pod's network is left.
    pub async fn setup(&self, pod: &PodNetRequest) -> Result<PodNetwork, NetError> {
        check_uid(&pod.uid)?;
        require_iptables(&pod.host_ports, &self.path_env, &self.config.node_name)?;
        let _guard = self.lock.lock().await;
        if let Some(state) = self.states.read(&pod.uid)? {
            if let Some(net) = self.network_of(&state) {
                if netns::is_netns(&net.netns_path) {
                    return Ok(net);
                }
            }
            // Half made (a crash mid-setup) or stale (a reboot): start afresh.
            self.undo(&state).await?;
        }
        let state = PodState {
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            netns_path: self.netns_dir.join(&pod.uid),
            host_ports: pod.host_ports.clone(),
            result: None,
        };
        // The record first, so that whatever follows can be undone after a crash.
        self.states.write(&state)?;
        match self.add(state).await {
            Ok(net) => Ok(net),
            Err((err, state)) => {
                if let Err(undo) = self.undo(&state).await {
                    tracing::warn!(uid = %pod.uid, error = %undo, "cleaning up a failed pod network setup");
                }
                Err(err)
            }
        }
    }

    async fn add(&self, mut state: PodState) -> Result<PodNetwork, (NetError, PodState)> {
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
        let _guard = self.lock.lock().await;
        match self.states.read(uid)? {
            Some(state) => self.undo(&state).await,
            // Nothing recorded; a namespace file without a record is removed all the same.
            None => netns::remove(&self.netns_dir.join(uid)),
        }
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
            container_id: &state.uid,
            netns,
            config: &config,
        };
        exec::run(&self.config.cni_bin_dir, &self.path_env, &inv).await
    }

    /// Pods that have networks (for re-adoption after an agent restart, and for cleaning
    /// leftovers of pods that no longer exist). Records that cannot be read are skipped.
    pub fn list(&self) -> Vec<PodNetwork> {
        self.states
            .uids()
            .unwrap_or_default()
            .iter()
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
