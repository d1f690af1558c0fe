//! What the runtime needs of a pod's sandbox (made and owned by the node agent): its network
//! namespace, `/etc` files and volume directories, looked up by pod uid.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

/// A finished sandbox (`sandbox.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// `(path in the container, file on the host)` for `/etc/hosts` and friends.
    pub etc_files: Vec<(String, PathBuf)>,
    /// Host directories of the pod's volumes, by name.
    pub volumes: BTreeMap<String, PathBuf>,
}

/// The node's pod sandboxes as the runtime sees them: read-only, by pod uid.
pub trait PodSandboxes: Send + Sync + 'static {
    /// The finished sandbox of pod `uid`, if any.
    fn get(&self, uid: &str) -> Option<SandboxInfo>;
}
