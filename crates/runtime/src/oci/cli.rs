//! The OCI runtime's command line as the agent uses it (the shim does `create`/`start`/`delete`
//! of a run): `kill`, `state`, `delete --force` and the runtime's own list of containers.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// One OCI runtime binary with its global arguments (`--root`, and for runsc its platform).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciCli {
    pub binary: PathBuf,
    /// Where the runtime keeps its container state (`--root`).
    pub root: PathBuf,
    /// More global arguments (runsc: `--platform=ptrace`, `--network=host`).
    pub extra_args: Vec<String>,
}

impl OciCli {
    /// The global arguments, before a subcommand.
    pub fn global_args(&self) -> Vec<String> {
        let mut args = vec!["--root".to_string(), self.root.display().to_string()];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = tokio::process::Command::new(&self.binary)
            .args(self.global_args())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("exec {}: {e}", self.binary.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `kill ID SIGNAL`: signals the container's init (a stopped container is no error).
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), String> {
        self.run(&["kill", id, signal]).await.map(|_| ())
    }

    /// `state ID`: the runtime's status word (`created`, `running`, `stopped`).
    pub async fn status(&self, id: &str) -> Result<String, String> {
        let out = self.run(&["state", id]).await?;
        let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        Ok(v["status"].as_str().unwrap_or_default().to_string())
    }

    /// `delete --force ID`: a container that does not exist is no error.
    pub async fn delete(&self, id: &str) -> Result<(), String> {
        match self.run(&["delete", "--force", id]).await {
            Ok(_) => Ok(()),
            Err(e) if e.contains("does not exist") || e.contains("not found") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The ids of the containers the runtime has state for (the entries of its root).
    pub fn ids(&self) -> Vec<String> {
        list_dir(&self.root)
    }
}

/// Container ids under a runtime's `--root`: runc keeps a directory per container, runsc a
/// `<sandbox>_sandbox:<container>.state` file (and a `.lock`) per container.
fn list_dir(dir: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                return Some(name);
            }
            let (_, container) = name.strip_suffix(".state")?.split_once("_sandbox:")?;
            Some(container.to_string())
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The container id of run `restart_count` of a container: unique per run, so a run's id is
/// never reused while the runtime may still hold the previous one.
pub fn container_id(uid: &str, container: &str, restart_count: i32) -> String {
    format!("{uid}_{container}_{restart_count}")
}

/// Whether `id` belongs to pod `uid`.
pub fn is_of_pod(id: &str, uid: &str) -> bool {
    id.strip_prefix(uid)
        .is_some_and(|rest| rest.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_per_run_and_per_pod() {
        assert_eq!(container_id("u-1", "web", 3), "u-1_web_3");
        assert!(is_of_pod("u-1_web_3", "u-1"));
        assert!(!is_of_pod("u-10_web_3", "u-1"));
    }
}
