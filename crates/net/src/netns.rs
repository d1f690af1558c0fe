//! Pod network namespaces as files: created by `unshare(CLONE_NEWNET)` in a short-lived thread
//! and kept alive by bind-mounting that thread's `/proc/thread-self/ns/net` onto a file.
//!
//! Why not `ip netns add`: its files live in the host-wide `/var/run/netns`, where names of
//! several kumo agents (and of parallel tests) could collide; kumo's own files under its state
//! dir are cleaned with it and need no extra process per pod. The namespace is created in a
//! dedicated thread (never a pooled one) because `unshare` moves only the calling thread, and
//! that thread exits right after the bind mount.

use crate::error::NetError;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Creates a new network namespace pinned at `path` (which must not exist yet).
pub(crate) fn create(path: &Path) -> Result<(), NetError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(|e| NetError::io("creating namespace file", path, e))?;
    let target: PathBuf = path.to_path_buf();
    let pinned = std::thread::Builder::new()
        .name("kumo-netns".into())
        .spawn(move || -> Result<(), (&'static str, Errno)> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ("unshare", e))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| ("bind mount", e))
        })
        .map_err(|e| NetError::io("starting namespace thread for", path, e))?
        .join()
        .unwrap_or(Err(("thread", Errno::EIO)));
    if let Err((op, source)) = pinned {
        let _ = std::fs::remove_file(path);
        return Err(NetError::Netns {
            path: path.to_path_buf(),
            op,
            source,
        });
    }
    Ok(())
}

/// Pins the namespace pinned at `from` at `to` as well (a second bind mount); `to` must not
/// exist yet. Handing a warm network to its pod moves it to the pod's own file this way.
pub(crate) fn rebind(from: &Path, to: &Path) -> Result<(), NetError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(to)
        .map_err(|e| NetError::io("creating namespace file", to, e))?;
    if let Err(source) = mount(Some(from), to, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
        let _ = std::fs::remove_file(to);
        return Err(NetError::Netns {
            path: to.to_path_buf(),
            op: "bind mount",
            source,
        });
    }
    Ok(())
}

/// Whether `path` is a live network namespace file (a bind-mounted nsfs inode). After a reboot
/// the file is still there but no longer a namespace.
pub(crate) fn is_netns(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Unmounts and deletes the namespace file; a missing or unmounted file is fine.
pub(crate) fn remove(path: &Path) -> Result<(), NetError> {
    // A file mounted twice needs two unmounts; a handful is plenty.
    for _ in 0..8 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => break,
            Err(source) => {
                return Err(NetError::Netns {
                    path: path.to_path_buf(),
                    op: "unmount",
                    source,
                })
            }
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(NetError::io("removing namespace file", path, e))
        }
        _ => Ok(()),
    }
}
