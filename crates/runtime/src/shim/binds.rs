//! Volumes of `process` containers: the shim moves into a mount namespace of its own (a slave of
//! the host's, so nothing it mounts shows on the host) and bind-mounts each volume at its
//! `mountPath` before it starts the container, which inherits that view.

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One volume mount, as it travels on the shim's command line (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// Parses `--bind` values.
pub fn parse_bind(s: &str) -> Result<Bind, String> {
    serde_json::from_str(s).map_err(|e| format!("invalid --bind {s:?}: {e}"))
}

/// Makes the shim's own mount namespace with `binds` in it.
pub fn enter(binds: &[Bind]) -> Result<(), String> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("new mount namespace: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| format!("make mounts private: {e}"))?;
    for b in binds {
        let shown = b.target.display();
        if !b.target.exists() {
            // A mount point the host lacks is made (and stays, as an empty directory).
            if b.source.is_dir() {
                std::fs::create_dir_all(&b.target)
            } else {
                std::fs::create_dir_all(b.target.parent().unwrap_or(&b.target))
                    .and_then(|_| std::fs::write(&b.target, b""))
            }
            .map_err(|e| format!("create mount point {shown}: {e}"))?;
        }
        mount(
            Some(&b.source),
            &b.target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| format!("mount {} at {shown}: {e}", b.source.display()))?;
        if b.read_only {
            mount(
                None::<&str>,
                &b.target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| format!("make {shown} read-only: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_round_trip_as_json() {
        let b = Bind {
            source: "/data/x:y".into(),
            target: "/mnt/a b".into(),
            read_only: true,
        };
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(parse_bind(&s).unwrap(), b);
        assert!(parse_bind("/a:/b").unwrap_err().contains("invalid --bind"));
    }
}
