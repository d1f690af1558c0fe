//! The mounts under a directory (from `/proc/self/mountinfo`) and taking them away, so a pod's
//! directories are never removed with something still mounted in them.

use crate::sys::Sys;
use std::path::{Path, PathBuf};

/// The mount points of a mountinfo text that lie under `dir` (or are `dir`), deepest first. Pure.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).ok();
            if let Some(v) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts (lazily) everything mounted under `dir`; the first failure is returned after trying
/// them all.
pub fn unmount_all_under(sys: &dyn Sys, dir: &Path) -> Result<(), String> {
    let info = sys
        .mountinfo()
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    let mut first = None;
    for m in mounts_under(&info, dir) {
        if let Err(e) = sys.unmount(&m) {
            if e != nix::Error::EINVAL && e != nix::Error::ENOENT {
                first.get_or_insert(format!("unmount {}: {e}", m.display()));
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// Removes `dir` (a directory of the runtime's own, on the real file system) and everything in
/// it after unmounting what is mounted there; a missing `dir` is no error.
pub fn remove_tree(sys: &dyn Sys, dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    unmount_all_under(sys, dir)?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("remove {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::FakeSys;

    #[test]
    fn mounts_under_a_directory_deepest_first() {
        let info = "\
22 1 0:21 / / rw - ext4 /dev/vda rw
40 22 0:40 / /d/pods/u1/c/rootfs rw - overlay overlay rw
41 22 0:41 / /d/pods/u1/vol/with\\040space rw - tmpfs tmpfs rw
42 40 0:42 / /d/pods/u1/c/rootfs/proc rw - proc proc rw
43 22 0:43 / /d/pods/u10/x rw - tmpfs tmpfs rw
";
        assert_eq!(
            mounts_under(info, Path::new("/d/pods/u1")),
            vec![
                PathBuf::from("/d/pods/u1/c/rootfs/proc"),
                PathBuf::from("/d/pods/u1/c/rootfs"),
                PathBuf::from("/d/pods/u1/vol/with space"),
            ]
        );
    }

    #[test]
    fn unmount_all_under_takes_the_mounts_under_a_directory_deepest_first() {
        let sys = FakeSys::new()
            .with_mount("/")
            .with_mount("/d/pods/u1/c/rootfs")
            .with_mount("/d/pods/u1/vol/with space")
            .with_mount("/d/pods/u1/c/rootfs/proc")
            .with_mount("/d/pods/u10/x");
        unmount_all_under(&sys, Path::new("/d/pods/u1")).expect("unmount");
        assert_eq!(
            sys.mounts(),
            ["/", "/d/pods/u10/x"].map(PathBuf::from).to_vec()
        );
        // Nothing left to unmount is no error.
        unmount_all_under(&sys, Path::new("/d/pods/u1")).expect("unmount again");
    }
}
