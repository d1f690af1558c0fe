//! Where the runtime keeps its state on disk under `<data_dir>/pods/<uid>/`.
//!
//! ```text
//! <data_dir>/pods/<uid>/pod.json                 namespace, name and uid of the pod
//! <data_dir>/pods/<uid>/work/                    default working directory of process containers
//! <data_dir>/pods/<uid>/<container>/state.json   the agent's record of the container (ContainerRecord)
//! <data_dir>/pods/<uid>/<container>/pid          written by the shim: the container's pid
//! <data_dir>/pods/<uid>/<container>/exit.json    written by the shim: how the container ended
//! <data_dir>/pods/<uid>/<container>/<n>.log      stdout+stderr of run n (the current and previous run are kept)
//! ```

use std::path::{Path, PathBuf};

/// Paths of the agent's state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

/// Whether `s` is safe as one path component (no separators, not `.` or `..`).
pub fn is_safe_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        Layout {
            root: data_dir.to_path_buf(),
        }
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir().join(uid)
    }

    pub fn pod_record(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("pod.json")
    }

    pub fn work_dir(&self, uid: &str) -> PathBuf {
        self.pod_dir(uid).join("work")
    }

    pub fn container_dir(&self, uid: &str, container: &str) -> PathBuf {
        self.pod_dir(uid).join(container)
    }

    pub fn state_file(&self, uid: &str, container: &str) -> PathBuf {
        self.container_dir(uid, container).join("state.json")
    }

    pub fn pid_file(&self, uid: &str, container: &str) -> PathBuf {
        self.container_dir(uid, container).join("pid")
    }

    pub fn exit_file(&self, uid: &str, container: &str) -> PathBuf {
        self.container_dir(uid, container).join("exit.json")
    }

    pub fn log_file(&self, uid: &str, container: &str, restart_count: i32) -> PathBuf {
        self.container_dir(uid, container)
            .join(format!("{restart_count}.log"))
    }
}

/// Marks `dir` as the top of a directory hierarchy (`chattr +T`): ext4 then places each of its
/// subdirectories (one per pod) in a block group of its own, as it does for top-level ones.
/// Pods come and go by the thousand; with all of them in the parent's group, each new file
/// (on a journal-less ext4) had to skip past every inode freed there in the last seconds, and
/// creating a pod's directories cost milliseconds. Best effort: other filesystems ignore or
/// refuse the flag, and nothing depends on it.
pub fn spread_subdirs(dir: &Path) {
    use rustix::fs::IFlags;
    let set = std::fs::File::open(dir).and_then(|f| {
        let flags = rustix::fs::ioctl_getflags(&f)?;
        if !flags.contains(IFlags::TOPDIR) {
            rustix::fs::ioctl_setflags(&f, flags | IFlags::TOPDIR)?;
        }
        Ok(())
    });
    if let Err(e) = set {
        tracing::debug!(dir = %dir.display(), error = %e, "cannot mark the directory as a top directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_documented_layout() {
        let l = Layout::new(Path::new("/d"));
        assert_eq!(l.pod_record("u"), Path::new("/d/pods/u/pod.json"));
        assert_eq!(l.work_dir("u"), Path::new("/d/pods/u/work"));
        assert_eq!(l.state_file("u", "c"), Path::new("/d/pods/u/c/state.json"));
        assert_eq!(l.exit_file("u", "c"), Path::new("/d/pods/u/c/exit.json"));
        assert_eq!(l.log_file("u", "c", 3), Path::new("/d/pods/u/c/3.log"));
    }

    #[test]
    fn pod_directories_are_spread_where_the_filesystem_can() {
        use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
        let dir = tempfile::tempdir().unwrap();
        let pods = dir.path().join("pods");
        std::fs::create_dir(&pods).unwrap();
        spread_subdirs(&pods);
        let f = std::fs::File::open(&pods).unwrap();
        let marked = ioctl_getflags(&f).is_ok_and(|fl| fl.contains(IFlags::TOPDIR));
        if !marked {
            // Only a filesystem that refuses the flag itself may leave it unset.
            let flags = ioctl_getflags(&f).unwrap_or(IFlags::empty());
            assert!(
                ioctl_setflags(&f, flags | IFlags::TOPDIR).is_err(),
                "the filesystem takes the flag, but spread_subdirs did not set it"
            );
        }
    }

    #[test]
    fn unsafe_components_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(!is_safe_component(bad), "{bad:?}");
        }
        assert!(is_safe_component("3f2c-11"));
    }
}
