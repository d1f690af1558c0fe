//! The errors of pod networking, one variant per cause.

use std::path::PathBuf;

/// Everything that can go wrong while giving a pod its network or taking it away.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A field of [`crate::NetworkConfig`] is unusable.
    #[error("network config {field}: {message}")]
    InvalidConfig {
        field: &'static str,
        message: String,
    },
    /// A pod uid that cannot be a CNI container id or a file name.
    #[error("invalid pod uid {uid:?}: {message}")]
    InvalidUid { uid: String, message: String },
    /// A container port or host port out of range, or an unknown protocol.
    #[error("{field}: {message}")]
    InvalidPort { field: String, message: String },
    /// A pod name that cannot be a host name.
    #[error("invalid pod name {name:?}: {message}")]
    InvalidPodName { name: String, message: String },
    /// Host ports are asked for but the portmap plugin's iptables is missing.
    #[error("hostPort needs iptables, which is not installed on node {node}")]
    HostPortNeedsIptables { node: String },
    /// The plugin binary is not in the CNI bin dir.
    #[error("cni plugin {plugin} not found at {}", path.display())]
    PluginNotFound { plugin: String, path: PathBuf },
    /// The plugin could not be started or talked to.
    #[error("cannot run cni plugin {plugin}")]
    PluginExec {
        plugin: String,
        #[source]
        source: std::io::Error,
    },
    /// The plugin answered with a CNI error (`code`, `msg`, `details`).
    #[error(
        "cni plugin {plugin} {command} failed with code {code}: {msg}{}",
        details_suffix(details)
    )]
    Plugin {
        plugin: String,
        command: String,
        code: u32,
        msg: String,
        details: String,
    },
    /// The plugin's output is neither a result nor a CNI error.
    #[error("cni plugin {plugin} {command}: {message}")]
    PluginOutput {
        plugin: String,
        command: String,
        message: String,
    },
    /// The plugin did not finish in time; it was killed.
    #[error("cni plugin {plugin} {command} did not finish within {seconds}s")]
    PluginTimeout {
        plugin: String,
        command: String,
        seconds: u64,
    },
    /// Creating, mounting or removing a network namespace failed.
    #[error("network namespace {}: {op}", path.display())]
    Netns {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    /// Reading or writing kumo's own files failed.
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The node's masquerade rules for pod egress could not be installed or removed.
    #[error("pod egress masquerade: {message}")]
    Masquerade { message: String },
    /// A netlink request for the pod network across nodes failed.
    #[error("netlink: {op}: {message}")]
    Netlink { op: &'static str, message: String },
    /// A per-pod state file is unreadable.
    #[error("pod network state {}", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

impl NetError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NetError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
