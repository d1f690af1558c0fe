//! hostPath volumes opened safely: the path is resolved beneath the allowed root it names with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so no symlink anywhere in it (one a pod
//! planted through an earlier volume, say) can redirect it, and what was opened is what gets
//! mounted (bind-mounted from its `/proc/self/fd` path), so nothing can swap the path between
//! the check and the mount. The node agent's own directories are never reachable.

use kumo_api::pod::HostPathType;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// A host path opened for a pod's volume, held until it is mounted.
#[derive(Debug)]
pub struct OpenedHostPath {
    fd: OwnedFd,
    /// Whether it is a directory (else a file, socket or device: mounted over a file).
    pub is_dir: bool,
}

impl OpenedHostPath {
    /// The path through which the opened object itself is reached, for the bind mount.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// Which directories a pod may mount from the host, and which never.
#[derive(Debug, Clone, Default)]
pub struct HostPathPolicy {
    /// `--allow-host-path` roots.
    pub allowed: Vec<PathBuf>,
    /// The agent's own directories (and the server's data dir under `kumo up`): a hostPath may
    /// be neither inside one nor above one. Kept with symlinks resolved.
    pub protected: Vec<PathBuf>,
}

impl HostPathPolicy {
    /// The policy for these roots, with the protected directories resolved as far as they exist.
    pub fn new(allowed: Vec<PathBuf>, protected: Vec<PathBuf>) -> Self {
        let protected = protected
            .into_iter()
            .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
            .collect();
        HostPathPolicy { allowed, protected }
    }
}

/// Opens `path` for a hostPath volume of type `t`, or says why it may not be used.
pub fn open(
    policy: &HostPathPolicy,
    path: &str,
    t: HostPathType,
) -> Result<OpenedHostPath, String> {
    let path = normal(path)?;
    let root = policy
        .allowed
        .iter()
        .filter(|a| path.starts_with(a))
        .max_by_key(|a| a.components().count())
        .ok_or_else(|| {
            let allowed: Vec<String> = policy
                .allowed
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            format!(
                "is not allowed on this node (allowed: {}; see --allow-host-path)",
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            )
        })?;
    if let Some(p) = policy.protected.iter().find(|p| overlaps(&path, p)) {
        return Err(format!(
            "overlaps the node agent's own directory {} and may not be mounted",
            p.display()
        ));
    }
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open the allowed root {}: {e}", root.display()))?;
    let rel: Vec<&std::ffi::OsStr> = path
        .strip_prefix(root)
        .unwrap_or(Path::new(""))
        .iter()
        .collect();
    let shown = path.display();
    let fd = match t {
        HostPathType::DirectoryOrCreate => {
            let mut dir = root_fd;
            for c in &rel {
                dir = match beneath(&dir, *c, OFlags::PATH | OFlags::DIRECTORY) {
                    Err(Errno::NOENT) => {
                        match rustix::fs::mkdirat(&dir, *c, Mode::from_raw_mode(0o755)) {
                            Ok(()) | Err(Errno::EXIST) => {}
                            Err(e) => return Err(format!("create {shown}: {e}")),
                        }
                        beneath(&dir, *c, OFlags::PATH | OFlags::DIRECTORY)
                    }
                    other => other,
                }
                .map_err(|e| why(&shown, e))?;
            }
            dir
        }
        HostPathType::FileOrCreate => {
            let Some((last, parents)) = rel.split_last() else {
                return Err(format!("{shown} is not a file"));
            };
            let mut dir = root_fd;
            for c in parents {
                dir = beneath(&dir, *c, OFlags::PATH | OFlags::DIRECTORY)
                    .map_err(|e| why(&shown, e))?;
            }
            match beneath(&dir, *last, OFlags::PATH) {
                Err(Errno::NOENT) => rustix::fs::openat2(
                    &dir,
                    *last,
                    OFlags::RDONLY | OFlags::CREATE | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
                ),
                other => other,
            }
            .map_err(|e| why(&shown, e))?
        }
        _ if rel.is_empty() => root_fd,
        _ => beneath(
            &root_fd,
            path.strip_prefix(root).unwrap_or(&path),
            OFlags::PATH,
        )
        .map_err(|e| why(&shown, e))?,
    };
    // The root itself may be reached through symlinks the node's owner made: what was opened
    // is checked again where it really is.
    let opened = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let real = std::fs::read_link(&opened).map_err(|e| format!("{shown}: {e}"))?;
    if let Some(p) = policy.protected.iter().find(|p| overlaps(&real, p)) {
        return Err(format!(
            "overlaps the node agent's own directory {} and may not be mounted",
            p.display()
        ));
    }
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("{shown}: {e}"))?;
    let ft = FileType::from_raw_mode(st.st_mode);
    let (ok, what) = match t {
        HostPathType::Unset => (true, ""),
        HostPathType::Directory | HostPathType::DirectoryOrCreate => {
            (ft == FileType::Directory, "a directory")
        }
        HostPathType::File | HostPathType::FileOrCreate => (ft == FileType::RegularFile, "a file"),
        HostPathType::Socket => (ft == FileType::Socket, "a socket"),
        HostPathType::CharDevice => (ft == FileType::CharacterDevice, "a character device"),
        HostPathType::BlockDevice => (ft == FileType::BlockDevice, "a block device"),
    };
    if !ok {
        return Err(format!("{shown} is not {what}"));
    }
    Ok(OpenedHostPath {
        fd,
        is_dir: ft == FileType::Directory,
    })
}

/// Whether one of the two paths lies inside the other.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Opens `rel` under `dir`, refusing symlinks and any way out of `dir`.
fn beneath(
    dir: &OwnedFd,
    rel: impl rustix::path::Arg,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        rel,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    )
}

fn why(shown: &impl std::fmt::Display, e: Errno) -> String {
    match e {
        Errno::LOOP => {
            format!("{shown} goes through a symbolic link, which hostPath volumes may not")
        }
        Errno::XDEV => format!("{shown} leaves its allowed root"),
        Errno::NOENT => format!("{shown}: no such file or directory"),
        Errno::NOTDIR => format!("{shown}: a component is not a directory"),
        e => format!("{shown}: {e}"),
    }
}

/// The path as components, or why it cannot be a hostPath (validation refuses these too).
fn normal(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("{path:?} is not an absolute path"));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("{path:?} may not contain '..'"))
            }
        }
    }
    Ok(out)
}

/// Bind-mounts what `opened` holds at `target` (made as an empty directory or file first).
pub fn mount_at(opened: &OpenedHostPath, target: &Path) -> Result<(), String> {
    let made = if opened.is_dir {
        std::fs::create_dir_all(target)
    } else {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(target)
            .map(drop)
    };
    made.map_err(|e| format!("create {}: {e}", target.display()))?;
    nix::mount::mount(
        Some(&opened.proc_path()),
        target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind-mount the host path at {}: {e}", target.display()))
}

#[cfg(test)]
#[path = "host_path_tests.rs"]
mod tests;
