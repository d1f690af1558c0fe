//! The JSON records on disk: the pod record, the agent's container record, the shim's exit record.

use crate::state::{ContainerRuntimeState, RunState};
use kumo_api::pod::ContainerStateTerminated;
use kumo_api::Time;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Which API object a pod directory belongs to (`pod.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRecord {
    /// The informer key of the pod: `ns/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The agent's record of one container (`state.json`), enough to re-adopt it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    pub restart_count: i32,
    /// The container process (also its process group id); `None` when it never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim_pid: Option<i32>,
    /// Start time of `pid` (field 22 of `/proc/<pid>/stat`), to tell it from a reused pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim_start_time: Option<u64>,
    pub started_at: Time,
    /// How the current run ended, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<ContainerStateTerminated>,
    /// How the previous run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_terminated: Option<ContainerStateTerminated>,
    /// The memory cgroup's OOM-kill counter when this run started (to tell an OOM kill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills_at_start: Option<u64>,
    /// `runc://ID` or `runsc://ID` for a container run by an OCI runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
}

impl ContainerRecord {
    pub fn runtime_state(&self) -> ContainerRuntimeState {
        ContainerRuntimeState {
            restart_count: self.restart_count,
            run: match &self.terminated {
                Some(t) => RunState::Exited(t.clone()),
                None => RunState::Running {
                    started_at: self.started_at,
                },
            },
            last_terminated: self.last_terminated.clone(),
            id: self
                .runtime_id
                .clone()
                .or_else(|| self.pid.map(|p| format!("process://{p}"))),
        }
    }
}

/// How a container ended, as its shim saw it (`exit.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// The exit code of a normal exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that killed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why it could not be started at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_error: Option<String>,
    /// The kernel's OOM killer ended it (its memory cgroup counted a kill).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    pub finished_at: Time,
}

/// Exit code and reason of a container that could not be started (as containerd reports it).
pub const START_ERROR_CODE: i32 = 128;

impl ExitRecord {
    /// The container state this exit means: exit 0 is `Completed`, anything else `Error`,
    /// a signal `128+sig`.
    pub fn terminated(&self, started_at: Option<Time>) -> ContainerStateTerminated {
        let (exit_code, signal, reason, message) = match (&self.start_error, self.code, self.signal)
        {
            (Some(e), _, _) => (START_ERROR_CODE, None, "StartError", Some(e.clone())),
            (None, _, Some(sig)) => (128 + sig, Some(sig), "Error", None),
            (None, Some(0), None) => (0, None, "Completed", None),
            (None, Some(code), None) => (code, None, "Error", None),
            (None, None, None) => (255, None, "Unknown", None),
        };
        let reason = if self.oom_killed && self.start_error.is_none() {
            "OOMKilled"
        } else {
            reason
        };
        ContainerStateTerminated {
            exit_code,
            signal,
            reason: Some(reason.to_string()),
            message,
            started_at,
            finished_at: Some(self.finished_at),
        }
    }
}

/// Writes `value` as JSON to `path` atomically (a temporary file, then a rename).
///
/// Not fsynced: these records describe what does not outlive a reboot (processes, mounts,
/// namespaces), and the page cache keeps them across a crash of the agent, which is what they
/// are for. An fsync costs about 4 ms here and a container start wrote several.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.write_all(b"\n")?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Reads a JSON record; a missing file is `None`, a corrupt one an error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::t;

    fn exit(code: Option<i32>, signal: Option<i32>, start_error: Option<&str>) -> ExitRecord {
        ExitRecord {
            code,
            signal,
            start_error: start_error.map(str::to_string),
            oom_killed: false,
            finished_at: t(9),
        }
    }

    #[test]
    fn exits_become_terminated_states() {
        let table = [
            (exit(Some(0), None, None), 0, None, "Completed"),
            (exit(Some(3), None, None), 3, None, "Error"),
            (exit(None, Some(9), None), 137, Some(9), "Error"),
            (exit(None, Some(15), None), 143, Some(15), "Error"),
            (
                ExitRecord {
                    oom_killed: true,
                    ..exit(Some(137), None, None)
                },
                137,
                None,
                "OOMKilled",
            ),
            (
                exit(None, None, Some("exec foo: not found")),
                128,
                None,
                "StartError",
            ),
        ];
        for (rec, code, signal, reason) in table {
            let term = rec.terminated(Some(t(1)));
            assert_eq!(
                (term.exit_code, term.signal, term.reason.as_deref()),
                (code, signal, Some(reason)),
                "{rec:?}"
            );
            assert_eq!(
                (term.started_at, term.finished_at),
                (Some(t(1)), Some(t(9)))
            );
        }
    }

    #[test]
    fn records_round_trip_through_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let rec = ContainerRecord {
            restart_count: 2,
            pid: Some(4242),
            shim_pid: Some(4241),
            proc_start_time: Some(123456),
            shim_start_time: Some(123450),
            started_at: t(5),
            terminated: None,
            last_terminated: Some(exit(Some(1), None, None).terminated(Some(t(1)))),
            oom_kills_at_start: Some(0),
            runtime_id: None,
        };
        write_json(&path, &rec).expect("write");
        assert_eq!(
            read_json::<ContainerRecord>(&path).expect("read"),
            Some(rec.clone())
        );
        assert!(!dir.path().join("state.json.tmp").exists());
        assert_eq!(
            read_json::<ContainerRecord>(&dir.path().join("none")).expect("read"),
            None
        );
        std::fs::write(&path, b"{not json").expect("write");
        assert!(read_json::<ContainerRecord>(&path).is_err());

        let state = rec.runtime_state();
        assert_eq!(state.id.as_deref(), Some("process://4242"));
        assert!(state.is_running());
    }
}
