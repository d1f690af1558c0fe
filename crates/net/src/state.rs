//! kumo's own record of each pod network (`<state_dir>/pods/<uid>.json`): enough to undo it
//! after an agent restart, including the ADD result that DEL wants as `prevResult`.

use crate::error::NetError;
use crate::ports::PortMapping;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One pod's network as kumo set it up (or was setting it up: `result` is `None` until every
/// ADD succeeded, so a crash mid-setup still leaves a record that teardown can follow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodState {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub netns_path: PathBuf,
    #[serde(default)]
    pub host_ports: Vec<PortMapping>,
    #[serde(default)]
    pub result: Option<Value>,
    /// The CNI container id when it is not `uid`: a network made warm before its pod existed
    /// keeps the id it was made with, which its DEL must name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_id: Option<String>,
    /// Whether the bridge plugin masquerades for this pod itself (networks made by kumo before
    /// the per-node rules: records without the field).
    #[serde(default = "yes")]
    pub plugin_masq: bool,
}

fn yes() -> bool {
    true
}

impl PodState {
    /// The container id the plugins know this network by.
    pub fn cni_id(&self) -> &str {
        self.cni_id.as_deref().unwrap_or(&self.uid)
    }
}

/// The directory of state files.
#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub(crate) fn new(dir: PathBuf) -> Self {
        StateDir { dir }
    }

    fn path(&self, uid: &str) -> PathBuf {
        self.dir.join(format!("{uid}.json"))
    }

    pub(crate) fn read(&self, uid: &str) -> Result<Option<PodState>, NetError> {
        read_file(&self.path(uid))
    }

    /// Writes atomically: a temporary file, fsynced, renamed over the old one.
    pub(crate) fn write(&self, state: &PodState) -> Result<(), NetError> {
        self.write_with(state, true)
    }

    /// Writes atomically without the fsync: for a warm network handed to its pod, whose warm
    /// record (fsynced when it was made) still stands for the network if a power loss takes
    /// this write (the next start's sweep then removes it).
    pub(crate) fn write_unsynced(&self, state: &PodState) -> Result<(), NetError> {
        self.write_with(state, false)
    }

    fn write_with(&self, state: &PodState, sync: bool) -> Result<(), NetError> {
        let path = self.path(&state.uid);
        let tmp = self.dir.join(format!(".{}.tmp", state.uid));
        let bytes = serde_json::to_vec_pretty(state).map_err(|source| NetError::State {
            path: path.clone(),
            source,
        })?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            if sync {
                f.sync_all()?;
            }
            drop(f);
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| NetError::io("writing", &path, e))
    }

    pub(crate) fn remove(&self, uid: &str) -> Result<(), NetError> {
        let path = self.path(uid);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(NetError::io("removing", &path, e))
            }
            _ => Ok(()),
        }
    }

    /// Every uid with a state file, sorted.
    pub(crate) fn uids(&self) -> Result<Vec<String>, NetError> {
        let mut uids: Vec<String> = file_names(&self.dir)?
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        uids.sort();
        Ok(uids)
    }
}

fn read_file(path: &Path) -> Result<Option<PodState>, NetError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NetError::io("reading", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| NetError::State {
            path: path.to_path_buf(),
            source,
        })
}

/// The names of the entries of `dir` (none when it does not exist).
pub(crate) fn file_names(dir: &Path) -> Result<Vec<String>, NetError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::io("listing", dir, e)),
    };
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Protocol;
    use serde_json::json;

    #[test]
    fn round_trip_and_listing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().to_path_buf());
        assert_eq!(dir.read("p1").unwrap(), None);
        assert_eq!(dir.uids().unwrap(), Vec::<String>::new());
        let state = PodState {
            uid: "p1".into(),
            namespace: "default".into(),
            name: "web".into(),
            netns_path: "/s/netns/p1".into(),
            host_ports: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
            }],
            result: Some(json!({"cniVersion": "1.0.0", "ips": []})),
            cni_id: None,
            plugin_masq: false,
        };
        dir.write(&state).unwrap();
        dir.write(&PodState {
            uid: "p0".into(),
            result: None,
            ..state.clone()
        })
        .unwrap();
        assert_eq!(dir.read("p1").unwrap(), Some(state));
        assert_eq!(
            dir.uids().unwrap(),
            vec!["p0".to_string(), "p1".to_string()]
        );
        dir.remove("p1").unwrap();
        dir.remove("p1").unwrap();
        assert_eq!(dir.uids().unwrap(), vec!["p0".to_string()]);
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("p1.json"), "{").unwrap();
        let err = StateDir::new(tmp.path().to_path_buf())
            .read("p1")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("pod network state {}", tmp.path().join("p1.json").display())
        );
    }
}
