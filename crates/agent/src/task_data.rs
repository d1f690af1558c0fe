//! MLTask data on the node: the replica's dataset (fetched from the API once per content digest,
//! every chunk verified, and shared read-only by every task that names it), its output directory
//! (uploaded to the API when the replica ends), and its scratch directory. Output and scratch
//! are keyed by task uid and rank, so a gang retry on the same node finds them again; they go
//! when the task is gone from the API.

use kumo_api::dataset::{
    ANNOTATION_DATASET, ANNOTATION_OUTPUT, ANNOTATION_SCRATCH, DATA_PATH, OUTPUT_PATH, SCRATCH_PATH,
};
use kumo_api::keys::{parse_rank, LABEL_RANK};
use kumo_api::pod::{EnvVar, NodeDir, Volume, VolumeMount};
use kumo_api::{MLTask, Pod, Resource};
use kumo_client::data::{fetch_into, get_dataset, upload_dir, DATA_PREFIX};
use kumo_client::Client;
use std::path::{Path, PathBuf};

/// The node directories one replica gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dirs {
    pub data: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub scratch: Option<PathBuf>,
}

/// The pod as its container is started: a process replica gets the directories themselves in
/// `DATA_DIR`, `OUTPUT_DIR`, `SCRATCH_DIR` (it sees the host's file system, as with
/// `data.hostPath`); a container replica gets them bind-mounted at `/data` (read-only),
/// `/output` and `/scratch`, with the variables naming those, as the agent's own node-dir
/// volumes (not hostPaths: no user can name those, and they pass no allow-list). Pure.
pub fn with_dirs(pod: &Pod, dirs: &Dirs) -> Pod {
    let mut pod = pod.clone();
    let process = crate::plan::is_process_pod(&pod);
    let wanted = [
        ("data", "DATA_DIR", DATA_PATH, true, &dirs.data),
        ("output", "OUTPUT_DIR", OUTPUT_PATH, false, &dirs.output),
        ("scratch", "SCRATCH_DIR", SCRATCH_PATH, false, &dirs.scratch),
    ];
    for (name, var, mount_path, read_only, dir) in wanted {
        let Some(dir) = dir else { continue };
        let host = dir.display().to_string();
        let value = if process {
            host
        } else {
            let volume = format!("kumo-{name}");
            pod.spec.volumes.push(Volume {
                name: volume.clone(),
                empty_dir: None,
                host_path: None,
                node_dir: Some(NodeDir(dir.clone())),
            });
            for c in &mut pod.spec.containers {
                c.volume_mounts.push(VolumeMount {
                    name: volume.clone(),
                    mount_path: mount_path.to_string(),
                    read_only,
                });
            }
            mount_path.to_string()
        };
        for c in &mut pod.spec.containers {
            c.env.push(EnvVar {
                name: var.to_string(),
                value: value.clone(),
            });
        }
    }
    pod
}

/// The task (its uid and name, from the pod's MLTask owner reference) and rank of a replica
/// pod, when it claims to be one. The owner reference, not the `kumo.dev/mltask` label, names
/// the task; [`check_owner`] makes sure the claim is true before any directory is given.
fn replica_of(pod: &Pod) -> Option<(String, String, u32)> {
    let rank = u32::try_from(parse_rank(pod.metadata.labels.get(LABEL_RANK)?)?).ok()?;
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .find(|o| o.kind == MLTask::KIND)?;
    kumo_runtime::layout::is_safe_component(&owner.uid)
        .then(|| (owner.uid.clone(), owner.name.clone(), rank))
}

/// A pod gets a task's output and scratch only if it is that task's replica: its owner is an
/// MLTask of the pod's own namespace with that uid, and its name is the replica's (names are
/// unique, and the controller made that one). Anyone may write labels and ownerReferences, so
/// without this a pod could name another task's uid and rank and read or write its directories.
async fn check_owner(
    client: &Client,
    pod: &Pod,
    (uid, owner, rank): (&str, &str, u32),
) -> Result<(), String> {
    let ns = pod.metadata.ns();
    let task = client
        .get_opt::<MLTask>(ns, owner)
        .await
        .map_err(|e| format!("cannot read the pod's MLTask {ns}/{owner}: {e}"))?;
    let owned = task.is_some_and(|t| t.metadata.uid.as_deref() == Some(uid))
        && pod.metadata.name == replica_pod_name(owner, rank);
    if owned {
        Ok(())
    } else {
        Err(format!(
            "output and scratch belong to the replicas of MLTask {ns}/{owner} (uid {uid}), and this pod is not its rank {rank} replica"
        ))
    }
}

/// The name the MLTask controller gives replica `rank` of task `task`.
fn replica_pod_name(task: &str, rank: u32) -> String {
    format!("{task}-{rank}")
}

/// Whether the pod asks for any of these directories.
pub fn wants_dirs(pod: &Pod) -> bool {
    let a = &pod.metadata.annotations;
    [ANNOTATION_DATASET, ANNOTATION_OUTPUT, ANNOTATION_SCRATCH]
        .iter()
        .any(|k| a.contains_key(*k))
}

/// The node's task data, under one root.
pub struct TaskData {
    root: PathBuf,
}

impl TaskData {
    pub fn new(root: PathBuf) -> Self {
        TaskData { root }
    }

    fn task_dir(&self, uid: &str) -> PathBuf {
        self.root.join("tasks").join(uid)
    }

    fn replica_dir(&self, uid: &str, rank: u32) -> PathBuf {
        self.task_dir(uid).join(format!("rank-{rank}"))
    }

    /// The dataset's directory, fetched on first use; an error says why it cannot be had.
    async fn dataset(&self, client: &Client, name: &str) -> Result<PathBuf, String> {
        let ds = get_dataset(client, name).await.map_err(|e| {
            if e.is_not_found() {
                format!("dataset {name:?} does not exist")
            } else {
                format!("dataset {name:?}: {e}")
            }
        })?;
        // Keyed by content: a dataset removed and pushed again with other files is another dir.
        let dir = self.root.join("datasets").join(&ds.info.digest);
        if dir.is_dir() {
            return Ok(dir);
        }
        let parent = self.root.join("datasets");
        std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        tracing::info!(dataset = name, digest = %ds.info.digest, files = ds.info.files, "fetching dataset");
        match fetch_into(client, &ds.manifest, &dir).await {
            Ok(()) => Ok(dir),
            // Another fetch of the same content finished first.
            Err(_) if dir.is_dir() => Ok(dir),
            Err(e) => Err(format!("fetching dataset {name:?}: {e}")),
        }
    }

    /// The directories `pod` asks for, made (and its dataset fetched) now.
    pub async fn prepare(&self, client: &Client, pod: &Pod) -> Result<Dirs, String> {
        let a = &pod.metadata.annotations;
        let mut dirs = Dirs::default();
        if let Some(name) = a.get(ANNOTATION_DATASET) {
            dirs.data = Some(self.dataset(client, name).await?);
        }
        let wants_own = a.contains_key(ANNOTATION_OUTPUT) || a.contains_key(ANNOTATION_SCRATCH);
        if !wants_own {
            return Ok(dirs);
        }
        let Some((uid, name, rank)) = replica_of(pod) else {
            return Err("output and scratch need an MLTask replica (owner and rank)".into());
        };
        check_owner(client, pod, (&uid, &name, rank)).await?;
        let replica = self.replica_dir(&uid, rank);
        let task_file = self.task_dir(&uid).join("task");
        let make =
            |d: &Path| std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()));
        make(&replica)?;
        // Which task the directory belongs to, to remove it once the task is gone.
        std::fs::write(&task_file, format!("{}/{name}", pod.metadata.ns()))
            .map_err(|e| format!("{}: {e}", task_file.display()))?;
        if a.contains_key(ANNOTATION_OUTPUT) {
            let d = replica.join("output");
            make(&d)?;
            dirs.output = Some(d);
        }
        if a.contains_key(ANNOTATION_SCRATCH) {
            let d = replica.join("scratch");
            make(&d)?;
            dirs.scratch = Some(d);
        }
        Ok(dirs)
    }

    /// Uploads the replica's output directory as its rank's output of the task.
    pub async fn collect_output(&self, client: &Client, pod: &Pod) -> Result<(), String> {
        if !pod.metadata.annotations.contains_key(ANNOTATION_OUTPUT) {
            return Ok(());
        }
        let Some((uid, task, rank)) = replica_of(pod) else {
            return Ok(());
        };
        let dir = self.replica_dir(&uid, rank).join("output");
        if !dir.is_dir() {
            return Ok(());
        }
        let manifest = upload_dir(client, &dir).await.map_err(|e| e.to_string())?;
        let body = serde_json::to_value(&manifest).map_err(|e| e.to_string())?;
        let path = format!(
            "{DATA_PREFIX}/namespaces/{}/mltasks/{task}/output/{rank}",
            pod.metadata.ns()
        );
        client
            .request_json::<serde_json::Value>(
                http::Method::PUT,
                &path,
                Some(("application/json", &body)),
            )
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(task, rank, files = manifest.files.len(), "collected output");
        Ok(())
    }

    /// Removes the output and scratch of tasks the API no longer has (or has a namesake of).
    pub async fn remove_gone_tasks(&self, client: &Client) {
        let Ok(entries) = std::fs::read_dir(self.root.join("tasks")) else {
            return;
        };
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().to_string();
            let Ok(key) = std::fs::read_to_string(entry.path().join("task")) else {
                continue;
            };
            let Some((ns, name)) = key.split_once('/') else {
                continue;
            };
            let gone = match client.get_opt::<MLTask>(ns, name).await {
                Ok(None) => true,
                Ok(Some(t)) => t.metadata.uid.as_deref() != Some(uid.as_str()),
                Err(_) => false,
            };
            if gone {
                tracing::info!(
                    task = key,
                    "removing the output and scratch of a deleted task"
                );
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(runtime: Option<&str>) -> Pod {
        let mut spec = json!({"containers": [{"name": "main", "image": "x"}]});
        if let Some(r) = runtime {
            spec["runtimeClassName"] = json!(r);
        }
        serde_json::from_value(json!({"metadata": {"name": "t-0"}, "spec": spec})).unwrap()
    }

    fn env(p: &Pod) -> Vec<String> {
        p.spec.containers[0]
            .env
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect()
    }

    #[test]
    fn directories_reach_the_replica() {
        let dirs = Dirs {
            data: Some("/n/datasets/abc".into()),
            output: Some("/n/tasks/u/rank-0/output".into()),
            scratch: None,
        };
        // A process replica gets the node directories themselves.
        let p = with_dirs(&pod(Some("process")), &dirs);
        assert_eq!(
            env(&p),
            [
                "DATA_DIR=/n/datasets/abc",
                "OUTPUT_DIR=/n/tasks/u/rank-0/output"
            ]
        );
        assert!(p.spec.volumes.is_empty());
        // A container gets them mounted, the data read-only.
        let p = with_dirs(&pod(None), &dirs);
        assert_eq!(env(&p), ["DATA_DIR=/data", "OUTPUT_DIR=/output"]);
        let mounts: Vec<(String, bool)> = p.spec.containers[0]
            .volume_mounts
            .iter()
            .map(|m| (m.mount_path.clone(), m.read_only))
            .collect();
        assert_eq!(mounts, [("/data".into(), true), ("/output".into(), false)]);
        // As the agent's own kind of volume, which no manifest can name.
        assert_eq!(p.spec.volumes[0].host_path, None);
        assert_eq!(
            p.spec.volumes[0].node_dir,
            Some(NodeDir("/n/datasets/abc".into()))
        );
        // Nothing asked, nothing changed.
        assert_eq!(with_dirs(&pod(None), &Dirs::default()), pod(None));
    }
}
