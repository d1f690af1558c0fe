//! Directories only their owner (root, for the agent) can enter: unpacked layers keep their
//! setuid files and device nodes, and no local user may reach those from the host.

use crate::error::{io_err, ImageError};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// The mode of a private directory.
pub(crate) const PRIVATE_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents, 0700 too) or, when it exists, makes it 0700 and owned by
/// this process's effective user: a store made by an older kumo had 0755 directories, and one
/// made by another user could be opened up again by its owner. A symlink or a file in its place
/// is an error, so the layers cannot be redirected elsewhere.
pub(crate) fn private_dir(dir: &Path) -> Result<(), ImageError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_MODE)
        .create(dir)
        .map_err(io_err(format!("creating {}", dir.display())))?;
    let meta =
        std::fs::symlink_metadata(dir).map_err(io_err(format!("inspecting {}", dir.display())))?;
    if !meta.is_dir() {
        return Err(ImageError::Invalid {
            what: "store directory".into(),
            reason: format!("{} is not a directory", dir.display()),
        });
    }
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    // Owner first: changing the owner would not widen the mode, but the mode is only worth
    // setting on a directory that is ours.
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid))
            .map_err(io_err(format!("taking ownership of {}", dir.display())))?;
    }
    if meta.mode() & 0o7777 != PRIVATE_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_MODE))
            .map_err(io_err(format!("making {} private (0700)", dir.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn new_and_existing_dirs_become_private() {
        let t = tempfile::tempdir().unwrap();
        let fresh = t.path().join("a/b");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let old = t.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o4777)).unwrap();
        private_dir(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
        // Twice is fine.
        private_dir(&old).unwrap();
        assert_eq!(mode(&old), 0o700);
    }

    #[test]
    fn a_symlink_or_file_in_place_of_the_dir_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = t.path().join("layers");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = private_dir(&link).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
        assert_eq!(mode(&target), 0o755);
        let file = t.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(private_dir(&file).is_err());
    }

    #[test]
    /// Runs as root, as the crate's other tests that make devices and `trusted.*` xattrs.
    fn a_dir_of_another_user_is_taken_back() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("layers");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        private_dir(&dir).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, 0, 0o700)
        );
    }
}
