//! hostPath resolution against a real file system (the symlink escape reproduced), and the
//! bind mount of what was opened (needs root, as the agent does).

use super::*;
use std::os::unix::fs::symlink;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// `<tmp>/allowed` (the allowed root) with `agent` inside it protected, and `<tmp>/outside`.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["allowed/x", "allowed/agent/mltask", "outside"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("outside/secret"), "host secret").unwrap();
        std::fs::write(dir.path().join("allowed/file"), "ok").unwrap();
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    fn policy(&self) -> HostPathPolicy {
        HostPathPolicy::new(
            vec![self.dir.path().join("allowed")],
            vec![self.dir.path().join("allowed/agent")],
        )
    }

    /// `Ok(is_dir)` or the reason, with the temp dir's path shown as `T`.
    fn check(&self, rel: &str, t: HostPathType) -> Result<bool, String> {
        open(&self.policy(), &self.path(rel), t)
            .map(|o| o.is_dir)
            .map_err(|e| e.replace(&self.dir.path().display().to_string(), "T"))
    }
}

#[test]
fn resolution_beneath_the_allowed_root() {
    let f = Fixture::new();
    // The escape: a pod plants `ln -s / x/root` through one volume, then asks for
    // `x/root` (or something under it) as another volume.
    symlink("/", f.dir.path().join("allowed/x/root")).unwrap();
    symlink(
        f.dir.path().join("outside"),
        f.dir.path().join("allowed/x/out"),
    )
    .unwrap();
    use HostPathType::*;
    for (rel, t, want) in [
        // The root itself holds the agent's directory here.
        ("allowed", Directory, Err("overlaps the node agent's own directory T/allowed/agent and may not be mounted")),
        ("allowed/x", Unset, Ok(true)),
        ("allowed/file", File, Ok(false)),
        ("allowed/file", Directory, Err("T/allowed/file is not a directory")),
        ("allowed/x", File, Err("T/allowed/x is not a file")),
        ("allowed/x/root", Unset, Err("T/allowed/x/root goes through a symbolic link, which hostPath volumes may not")),
        ("allowed/x/root/etc", Directory, Err("T/allowed/x/root/etc goes through a symbolic link, which hostPath volumes may not")),
        ("allowed/x/out/secret", File, Err("T/allowed/x/out/secret goes through a symbolic link, which hostPath volumes may not")),
        ("allowed/x/root/tmp/made", DirectoryOrCreate, Err("T/allowed/x/root/tmp/made goes through a symbolic link, which hostPath volumes may not")),
        ("allowed/x/out/new", FileOrCreate, Err("T/allowed/x/out/new goes through a symbolic link, which hostPath volumes may not")),
        ("allowed/missing", Directory, Err("T/allowed/missing: no such file or directory")),
        ("outside", Directory, Err("is not allowed on this node (allowed: T/allowed; see --allow-host-path)")),
        ("allowed/agent/mltask", Directory, Err("overlaps the node agent's own directory T/allowed/agent and may not be mounted")),
        ("allowed/agent", Directory, Err("overlaps the node agent's own directory T/allowed/agent and may not be mounted")),
    ] {
        assert_eq!(f.check(rel, t), want.map_err(str::to_string), "{rel} {t:?}");
    }
    // Nothing was made through a link.
    assert!(!Path::new("/tmp/made").exists());
    assert!(!f.dir.path().join("outside/new").exists());
}

#[test]
fn a_root_that_contains_the_agent_is_refused() {
    let f = Fixture::new();
    let policy = HostPathPolicy::new(
        vec![f.dir.path().to_path_buf()],
        vec![f.dir.path().join("allowed/agent")],
    );
    let err = open(&policy, &f.path("allowed"), HostPathType::Directory).unwrap_err();
    assert!(
        err.starts_with("overlaps the node agent's own directory"),
        "{err}"
    );
    // A symlink the node's owner made to reach the agent's directory under another name is
    // seen through: the check is made again on what was opened.
    symlink(
        f.dir.path().join("allowed/agent"),
        f.dir.path().join("alias"),
    )
    .unwrap();
    let policy = HostPathPolicy::new(
        vec![f.dir.path().join("alias")],
        vec![f.dir.path().join("allowed/agent")],
    );
    let err = open(&policy, &f.path("alias/mltask"), HostPathType::Directory).unwrap_err();
    assert!(
        err.starts_with("overlaps the node agent's own directory"),
        "{err}"
    );
}

#[test]
fn or_create_types_make_what_is_missing() {
    let f = Fixture::new();
    assert_eq!(
        f.check("allowed/new/deep", HostPathType::DirectoryOrCreate),
        Ok(true)
    );
    assert!(f.dir.path().join("allowed/new/deep").is_dir());
    assert_eq!(
        f.check("allowed/new/deep/f.log", HostPathType::FileOrCreate),
        Ok(false)
    );
    assert!(f.dir.path().join("allowed/new/deep/f.log").is_file());
    // Existing of the other type.
    assert_eq!(
        f.check("allowed/file", HostPathType::DirectoryOrCreate),
        Err("T/allowed/file: a component is not a directory".to_string())
    );
    assert_eq!(
        f.check("allowed/x", HostPathType::FileOrCreate),
        Err("T/allowed/x is not a file".to_string())
    );
}

#[test]
fn what_was_opened_is_what_is_mounted() {
    let f = Fixture::new();
    let opened = open(&f.policy(), &f.path("allowed/x"), HostPathType::Directory).unwrap();
    // The path is swapped for a link to the host's secrets after the check: the mount still
    // shows the directory that was opened.
    std::fs::rename(
        f.dir.path().join("allowed/x"),
        f.dir.path().join("allowed/x.old"),
    )
    .unwrap();
    symlink(f.dir.path().join("outside"), f.dir.path().join("allowed/x")).unwrap();
    std::fs::write(f.dir.path().join("allowed/x.old/mine"), "pod data").unwrap();
    let target = f.dir.path().join("mnt");
    mount_at(&opened, &target).expect("bind mount (needs root)");
    let seen: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    kumo_runtime::mounts::remove_tree(&kumo_runtime::sys::RealSys, &target).expect("unmount");
    assert_eq!(seen, ["mine"]);
    assert!(f.dir.path().join("outside/secret").exists());
}
