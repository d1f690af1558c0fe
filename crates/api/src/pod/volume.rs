//! Pod volumes (`emptyDir`, `hostPath`) and the containers' `volumeMounts`.

use super::Container;
use crate::quantity::Quantity;
use crate::validation::{is_dns_label, Errors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A volume the pod's containers can mount: exactly one source is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolumeSource>,
    /// A directory the node agent itself made for the pod (an MLTask replica's data, output and
    /// scratch). Never on the wire: no client can set it, so it is not a way to reach the
    /// agent's directories; the agent adds it to the pod it runs.
    #[serde(skip)]
    pub node_dir: Option<NodeDir>,
}

/// A node directory the agent mounts for a pod (see [`Volume::node_dir`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDir(pub std::path::PathBuf);

/// A directory that lives as long as the pod, shared by its containers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmptyDirVolumeSource {
    /// `""` (the node's disk) or `Memory` (a tmpfs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
}

impl EmptyDirVolumeSource {
    pub fn is_memory(&self) -> bool {
        self.medium.as_deref() == Some(MEDIUM_MEMORY)
    }
}

/// The `medium` of a tmpfs-backed emptyDir.
pub const MEDIUM_MEMORY: &str = "Memory";

/// A file or directory of the node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPathVolumeSource {
    pub path: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<HostPathType>,
}

/// What must be at a hostPath before the pod starts (Kubernetes' `HostPathType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostPathType {
    #[serde(rename = "")]
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

/// A volume mounted into a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// Checks the pod's volumes; returns the names of the valid ones (for the mounts' check).
pub fn validate_volumes(volumes: &[Volume], errors: &mut Errors) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let path = format!("spec.volumes[{i}]");
        if v.name.is_empty() {
            errors.add(format!("{path}.name"), "Required value");
        } else if !is_dns_label(&v.name) {
            errors.add(
                format!("{path}.name"),
                format!("Invalid value: {:?}: must be a DNS label", v.name),
            );
        } else if !names.insert(v.name.clone()) {
            errors.add(
                format!("{path}.name"),
                format!("Duplicate value: {:?}", v.name),
            );
        }
        match (&v.empty_dir, &v.host_path) {
            (None, None) => errors.add(
                path.clone(),
                "Required value: must specify a volume type (emptyDir or hostPath)",
            ),
            (Some(_), Some(_)) => errors.add(
                format!("{path}.hostPath"),
                "Forbidden: may not specify more than 1 volume type",
            ),
            (Some(e), None) => {
                if let Some(m) = e.medium.as_deref().filter(|m| !m.is_empty()) {
                    if m != MEDIUM_MEMORY {
                        errors.add(
                            format!("{path}.emptyDir.medium"),
                            format!("Unsupported value: {m:?}: supported values: \"\", \"Memory\""),
                        );
                    }
                }
                if let Some(q) = &e.size_limit {
                    if q.millis() <= 0 || q.millis() % 1000 != 0 {
                        errors.add(
                            format!("{path}.emptyDir.sizeLimit"),
                            format!(
                                "Invalid value: {:?}: must be a positive whole number of bytes",
                                q.as_str()
                            ),
                        );
                    }
                }
            }
            (None, Some(h)) => {
                if !h.path.starts_with('/') {
                    errors.add(
                        format!("{path}.hostPath.path"),
                        format!("Invalid value: {:?}: must be an absolute path", h.path),
                    );
                } else if h.path.split('/').any(|c| c == "..") {
                    errors.add(
                        format!("{path}.hostPath.path"),
                        format!("Invalid value: {:?}: must not contain '..'", h.path),
                    );
                }
            }
        }
    }
    names
}

/// Checks a container's mounts against the pod's volume names.
pub fn validate_mounts(c: &Container, path: &str, volumes: &BTreeSet<String>, errors: &mut Errors) {
    let mut paths = BTreeSet::new();
    for (j, m) in c.volume_mounts.iter().enumerate() {
        let mpath = format!("{path}.volumeMounts[{j}]");
        if m.name.is_empty() {
            errors.add(format!("{mpath}.name"), "Required value");
        } else if !volumes.contains(&m.name) {
            errors.add(
                format!("{mpath}.name"),
                format!(
                    "Not found: {:?}: no volume of that name in spec.volumes",
                    m.name
                ),
            );
        }
        if !m.mount_path.starts_with('/') {
            errors.add(
                format!("{mpath}.mountPath"),
                format!(
                    "Invalid value: {:?}: must be an absolute path",
                    m.mount_path
                ),
            );
        } else if m.mount_path.split('/').any(|c| c == "..") {
            errors.add(
                format!("{mpath}.mountPath"),
                format!("Invalid value: {:?}: must not contain '..'", m.mount_path),
            );
        } else if !paths.insert(m.mount_path.trim_end_matches('/').to_string()) {
            errors.add(
                format!("{mpath}.mountPath"),
                format!("Invalid value: {:?}: must be unique", m.mount_path),
            );
        }
    }
}
