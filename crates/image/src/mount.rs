//! Container root file systems: an overlay of an image's layers, and records of who uses what.

use crate::digest::Digest;
use crate::error::{io_err, ImageError};
use crate::store::{Image, ImageStore, Rootfs};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The kernel takes mount options up to a page.
const MAX_OPTIONS: usize = 4000;

/// A record in `mounts/`: a container dir whose merged root uses an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MountRecord {
    pub container_dir: PathBuf,
    pub digest: String,
}

fn record_path(store: &Path, container_dir: &Path) -> PathBuf {
    let key = Digest::of(container_dir.as_os_str().as_encoded_bytes());
    store
        .join("mounts")
        .join(format!("{}.json", &key.hex()[..32]))
}

fn absolute(dir: &Path) -> Result<PathBuf, ImageError> {
    std::path::absolute(dir).map_err(io_err(format!("resolving {}", dir.display())))
}

/// Whether the kernel takes overlayfs's `volatile` option (until it refuses it once).
static VOLATILE_OK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Mounts `image` at `<container_dir>/merged` (see [`ImageStore::mount_rootfs`]).
pub(crate) fn mount(
    store: &ImageStore,
    image: &Image,
    container_dir: &Path,
) -> Result<Rootfs, ImageError> {
    let container_dir = absolute(container_dir)?;
    let merged = container_dir.join("merged");
    let upper = container_dir.join("upper");
    let work = container_dir.join("work");
    // The merged root holds the image's setuid files and the container's own: only root may
    // enter the container dir (checked again on every mount, for dirs made by an older kumo).
    // `upper/` itself keeps 0755: its mode is the mode of the container's `/`.
    crate::private::private_dir(&container_dir)?;
    for d in [&merged, &upper, &work] {
        crate::blobs::mkdirs(d)?;
    }
    let rootfs = Rootfs {
        merged: merged.clone(),
        container_dir: container_dir.clone(),
    };
    // Held across the check, the mount and the record, so `remove` and GC see either no
    // mount or a recorded one.
    let lock = store.meta().lock()?;
    let record = MountRecord {
        container_dir: container_dir.clone(),
        digest: image.digest.clone(),
    };
    if is_mounted(&merged)? {
        write_record(store.dir(), &record)?;
        drop(lock);
        let _ = store.touch(&image.digest);
        return Ok(rootfs);
    }
    let mut lower: Vec<PathBuf> = image.layers.iter().rev().cloned().collect();
    if lower.is_empty() {
        let empty = store.dir().join("layers").join("empty");
        crate::blobs::mkdirs(&empty)?;
        lower.push(empty);
    }
    for l in &lower {
        if !l.is_dir() {
            return Err(ImageError::NotFound(format!(
                "{} (layer {} is missing)",
                image.reference,
                l.display()
            )));
        }
    }
    let options = overlay_options(&lower, &upper, &work)?;
    let mount = |options: &str| {
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options),
        )
    };
    // `volatile` (Linux 5.10+): the container's writes are thrown away with its rootfs, so the
    // overlay need not sync its upper filesystem, which it otherwise does on unmount (measured:
    // 44 ms of a container's exit, with the whole data disk synced). Older kernels refuse it.
    let volatile = VOLATILE_OK.load(std::sync::atomic::Ordering::Relaxed);
    let mut mounted = if volatile {
        mount(&format!("{options},volatile"))
    } else {
        mount(&options)
    };
    if volatile && mounted == Err(nix::errno::Errno::EINVAL) {
        VOLATILE_OK.store(false, std::sync::atomic::Ordering::Relaxed);
        mounted = mount(&options);
    }
    mounted.map_err(|source| ImageError::Mount {
        context: format!("mounting the overlay rootfs at {}", merged.display()),
        source,
    })?;
    if let Err(e) = write_record(store.dir(), &record) {
        let _ = nix::mount::umount(&merged);
        return Err(e);
    }
    drop(lock);
    let _ = store.touch(&image.digest);
    Ok(rootfs)
}

/// `lowerdir=top:...:bottom,upperdir=...,workdir=...`, refusing paths overlayfs cannot parse.
pub(crate) fn overlay_options(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<String, ImageError> {
    let mut paths = Vec::new();
    for p in lower.iter().map(PathBuf::as_path).chain([upper, work]) {
        let s = p.to_str().ok_or_else(|| ImageError::Invalid {
            what: "rootfs path".into(),
            reason: format!("{} is not UTF-8", p.display()),
        })?;
        if s.contains([',', ':', '\\']) {
            return Err(ImageError::Invalid {
                what: "rootfs path".into(),
                reason: format!("{s} contains ',', ':' or '\\', which overlayfs cannot take"),
            });
        }
        paths.push(s);
    }
    let (lower, rest) = paths.split_at(lower.len());
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        rest[0],
        rest[1]
    );
    if options.len() > MAX_OPTIONS {
        return Err(ImageError::Invalid {
            what: "rootfs".into(),
            reason: format!(
                "{} layers make overlay options of {} bytes, over the kernel's {MAX_OPTIONS}",
                lower.len(),
                options.len()
            ),
        });
    }
    Ok(options)
}

fn write_record(store: &Path, record: &MountRecord) -> Result<(), ImageError> {
    let path = record_path(store, &record.container_dir);
    let json = serde_json::to_vec(record).map_err(|e| crate::error::invalid("mount record", e))?;
    std::fs::write(&path, json).map_err(io_err(format!("writing {}", path.display())))
}

/// Unmounts `<container_dir>/merged` (see [`ImageStore::unmount_rootfs`]).
pub(crate) fn unmount(store: &ImageStore, container_dir: &Path) -> Result<(), ImageError> {
    let container_dir = absolute(container_dir)?;
    let merged = container_dir.join("merged");
    let _lock = store.meta().lock()?;
    if is_mounted(&merged)? {
        nix::mount::umount(&merged).map_err(|source| ImageError::Mount {
            context: format!("unmounting the rootfs at {}", merged.display()),
            source,
        })?;
    }
    let record = record_path(store.dir(), &container_dir);
    match std::fs::remove_file(&record) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_err(format!("removing {}", record.display()))(e))
        }
        _ => Ok(()),
    }
}

/// The live mount records; records whose mount is gone (a reboot, an unmount by hand) are
/// deleted. Call with the store's lock held.
pub(crate) fn users(store: &Path) -> Result<Vec<MountRecord>, ImageError> {
    let dir = store.join("mounts");
    let entries = std::fs::read_dir(&dir).map_err(io_err(format!("reading {}", dir.display())))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let record: Option<MountRecord> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match record {
            Some(r) if is_mounted(&r.container_dir.join("merged"))? => out.push(r),
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    Ok(out)
}

/// True when `path` is a mount point in this mount namespace.
pub(crate) fn is_mounted(path: &Path) -> Result<bool, ImageError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading /proc/self/mountinfo"))?;
    let want = path.to_string_lossy();
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape(mp) == want))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_list_layers_top_first() {
        let lower = vec![PathBuf::from("/l/top"), PathBuf::from("/l/bottom")];
        let o = overlay_options(&lower, Path::new("/c/upper"), Path::new("/c/work")).unwrap();
        assert_eq!(
            o,
            "lowerdir=/l/top:/l/bottom,upperdir=/c/upper,workdir=/c/work"
        );
        let bad = vec![PathBuf::from("/l/a:b")];
        assert!(overlay_options(&bad, Path::new("/u"), Path::new("/w")).is_err());
        let many: Vec<PathBuf> = (0..200)
            .map(|i| PathBuf::from(format!("/var/lib/kumo/agent/images/layers/{i:064}")))
            .collect();
        let e = overlay_options(&many, Path::new("/u"), Path::new("/w")).unwrap_err();
        assert!(e.to_string().contains("200 layers"), "{e}");
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
        assert!(is_mounted(Path::new("/proc")).unwrap());
        assert!(!is_mounted(Path::new("/proc/self")).unwrap());
    }
}
