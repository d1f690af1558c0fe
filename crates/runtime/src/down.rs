//! Takes a node's containers down for good (`kumo down`, and every e2e test's teardown): kills
//! its processes, removes the OCI runtimes' state, unmounts what it mounted and removes its
//! cgroups, saying what it removed.
//!
//! A node is its data dir and its cgroup parent. Nothing of another node is touched: a process
//! is the node's when it is in one of the node's pod cgroups or when its command line or
//! working directory names the data dir (shims, `runsc` sandboxes and gofers, the agent
//! itself); mounts are those under the data dir; cgroups those of the node's pods under its
//! parent. This process and its ancestors (a `sudo`, a test) are never killed.

use crate::cgroup::hierarchies;
use crate::cgroup_parent::CgroupParent;
use crate::sys::{RealSys, Sys};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One thing taken away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// `process`, `runtime state`, `mount`, `cgroup`.
    pub kind: &'static str,
    pub what: String,
}

impl fmt::Display for Removed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.what)
    }
}

fn removed(kind: &'static str, what: impl fmt::Display) -> Removed {
    Removed {
        kind,
        what: what.to_string(),
    }
}

/// Which pod cgroups under the parent are the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodScope {
    /// Every one: the parent is the node's own (`kumo down`).
    AllUnderParent,
    /// Only those of the pods the data dir has state for: several nodes share the parent (the
    /// e2e clusters of parallel tests all use `kumo`).
    Recorded,
}

/// A node's on-disk identity.
#[derive(Debug, Clone)]
pub struct Node {
    /// The agent's data dir (`kumo agent --data-dir`, `<kumo up data dir>/agent`).
    pub data_dir: PathBuf,
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    pub cgroup_parent: CgroupParent,
}

/// Kills, removes and unmounts everything of the node's containers; what was removed, in order.
/// [`stop`], then [`release`]: a caller that takes the pod networks down too does that between
/// the two, while the pods' namespace files are still mounted.
pub fn down(node: &Node, scope: PodScope) -> Vec<Removed> {
    let mut out = stop(node, scope);
    out.extend(release(node, scope));
    out
}

/// Kills the node's processes and removes the OCI runtimes' records of them.
pub fn stop(node: &Node, scope: PodScope) -> Vec<Removed> {
    let uids = pod_uids(node, scope, &RealSys);
    let mut out = kill_processes(node, &uids, &RealSys);
    out.extend(remove_runtime_state(&node.data_dir));
    out
}

/// Unmounts what is mounted under the data dir and removes the node's pod cgroups.
pub fn release(node: &Node, scope: PodScope) -> Vec<Removed> {
    let uids = pod_uids(node, scope, &RealSys);
    let mut out = unmount_under(&node.data_dir);
    out.extend(remove_cgroups(node, scope, &uids, &RealSys));
    out
}

/// Whether `name` is a pod uid (the name of pod state and pod cgroup directories).
fn is_uid(name: &str) -> bool {
    name.len() == 36 && name.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The uids of the pods the data dir has state for: the children of every `pods` and
/// `sandboxes` directory in it (the agent's own and each runtime's).
pub fn recorded_pod_uids(data_dir: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, depth: usize, uids: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            if name == "pods" || name == "sandboxes" {
                for pod in std::fs::read_dir(entry.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let uid = pod.file_name().to_string_lossy().to_string();
                    if is_uid(&uid) {
                        uids.insert(uid);
                    }
                }
            } else if depth > 0 {
                walk(&entry.path(), depth - 1, uids);
            }
        }
    }
    let mut uids = BTreeSet::new();
    walk(data_dir, 3, &mut uids);
    uids
}

fn pod_uids(node: &Node, scope: PodScope, sys: &dyn Sys) -> BTreeSet<String> {
    let mut uids = recorded_pod_uids(&node.data_dir);
    if scope == PodScope::AllUnderParent {
        for h in hierarchies(sys, &node.cgroup_root) {
            for dir in sys
                .subdirs(&node.cgroup_parent.under(&h))
                .unwrap_or_default()
            {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                if is_uid(&name) {
                    uids.insert(name.to_string());
                }
            }
        }
    }
    uids
}

/// The pod cgroup directories of `uids` in every hierarchy, containers (deepest) first.
fn pod_cgroups(node: &Node, uids: &BTreeSet<String>, sys: &dyn Sys) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for h in hierarchies(sys, &node.cgroup_root) {
        for uid in uids {
            let pod = node.cgroup_parent.under(&h).join(uid);
            if !sys.is_dir(&pod) {
                continue;
            }
            let mut containers = sys.subdirs(&pod).unwrap_or_default();
            containers.sort();
            dirs.extend(containers);
            dirs.push(pod);
        }
    }
    dirs
}

/// Whether an argument of a command line names `dir` or a path under it (`--data-dir=DIR`, a
/// shell script's `cd DIR/x` too).
fn names_dir(arg: &str, dir: &Path) -> bool {
    let value = arg.split_once('=').map_or(arg, |(_, v)| v);
    let inside = format!("{}/", dir.display());
    [arg, value]
        .iter()
        .any(|a| a.starts_with('/') && Path::new(a).starts_with(dir))
        || arg.contains(&inside)
}

/// This process and its ancestors.
fn own_lineage() -> BTreeSet<i32> {
    let mut pids = BTreeSet::new();
    let mut pid = std::process::id() as i32;
    while pid > 1 && pids.insert(pid) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        pid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
    }
    pids
}

/// The node's live processes, by pid with their names.
fn node_processes(
    node: &Node,
    uids: &BTreeSet<String>,
    sys: &dyn Sys,
    spare: &BTreeSet<i32>,
) -> Vec<(i32, String)> {
    let mut pids = BTreeSet::new();
    for dir in pod_cgroups(node, uids, sys) {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        let named = cmdline
            .split(|b| *b == 0)
            .any(|a| names_dir(&String::from_utf8_lossy(a), &node.data_dir));
        if named || cwd.starts_with(&node.data_dir) {
            pids.insert(pid);
        }
    }
    pids.into_iter()
        .filter(|p| !spare.contains(p) && alive(*p))
        .map(|p| {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            (p, comm.trim().to_string())
        })
        .collect()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// SIGKILLs the node's processes (their process groups too, when they lead one: shims and
/// containers do) until none is left, for at most ten seconds: SIGKILL takes effect
/// asynchronously, and a dying shim's child may show up once.
fn kill_processes(node: &Node, uids: &BTreeSet<String>, sys: &dyn Sys) -> Vec<Removed> {
    use nix::sys::signal::{kill, Signal::SIGKILL};
    use nix::unistd::{getpgid, Pid};
    let spare = own_lineage();
    let own_group = nix::unistd::getpgrp().as_raw();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = node_processes(node, uids, sys, &spare);
        if found.is_empty() || Instant::now() > deadline {
            for (pid, _) in &found {
                tracing::warn!(pid, "process still alive after SIGKILL");
            }
            return out;
        }
        for (pid, comm) in found {
            if getpgid(Some(Pid::from_raw(pid)))
                .is_ok_and(|g| g.as_raw() == pid && pid != own_group)
            {
                let _ = kill(Pid::from_raw(-pid), SIGKILL);
            }
            let _ = kill(Pid::from_raw(pid), SIGKILL);
            if seen.insert(pid) {
                out.push(removed("process", format!("{pid} ({comm})")));
            }
        }
        // Polling a condition (the processes are gone) with a deadline.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the OCI runtimes' records of their containers (`<data dir>/<runc|runsc>/state/*`):
/// their processes are dead, so nothing is left for the runtime to do but forget them.
fn remove_runtime_state(data_dir: &Path) -> Vec<Removed> {
    let mut out = Vec::new();
    for class in ["runc", "runsc"] {
        let state = data_dir.join(class).join("state");
        for entry in std::fs::read_dir(&state).into_iter().flatten().flatten() {
            let path = entry.path();
            let result = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match result {
                Ok(()) => out.push(removed(
                    "runtime state",
                    format!("{class} {}", entry.file_name().to_string_lossy()),
                )),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove"),
            }
        }
    }
    out
}

/// Mount points under `dir` in this mount namespace, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    crate::mounts::mounts_under(&info, dir)
}

/// Unmounts everything mounted under `dir` (root filesystems, volumes, namespace files),
/// deepest first, detached: a mount still busy goes once its last user does.
pub fn unmount_under(dir: &Path) -> Vec<Removed> {
    let mut out = Vec::new();
    for p in mounts_under(dir) {
        // A point mounted twice is unmounted until it is no longer one.
        let mut done = false;
        while nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH).is_ok() {
            done = true;
        }
        if done {
            out.push(removed("mount", p.display()));
        }
    }
    out
}

/// Removes the node's pod cgroups (containers first), then its parent's levels where empty
/// (when the parent is the node's own).
/// A cgroup that a dying process still holds is refused (EBUSY) for a moment: its processes
/// are killed again and the removal retried, for at most five seconds.
fn remove_cgroups(
    node: &Node,
    scope: PodScope,
    uids: &BTreeSet<String>,
    sys: &dyn Sys,
) -> Vec<Removed> {
    let mut out = Vec::new();
    for dir in pod_cgroups(node, uids, sys) {
        if remove_cgroup(&dir) {
            out.push(removed("cgroup", dir.display()));
        }
    }
    if scope == PodScope::Recorded {
        // Other nodes' pods may be about to be made under the shared parent (a runtime makes
        // the levels one by one): removing it under them would fail their start.
        return out;
    }
    for h in hierarchies(sys, &node.cgroup_root) {
        for level in node.cgroup_parent.levels(&h).into_iter().rev() {
            // Another node's pods (or a shared parent's) keep it: rmdir refuses a non-empty
            // cgroup, and that is the check.
            if sys.is_dir(&level) && std::fs::remove_dir(&level).is_ok() {
                out.push(removed("cgroup", level.display()));
            }
        }
    }
    out
}

/// Removes one cgroup; whether it was there and is gone.
pub fn remove_cgroup(dir: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {}
            Err(_) => return false,
        }
        if Instant::now() > deadline {
            tracing::warn!(path = %dir.display(), "cgroup still busy after 5 s");
            return false;
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Polling a condition (the cgroup empties) with a deadline.
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_that_name_the_data_dir() {
        let check = |arg: &str, expected: bool| {
            assert_eq!(names_dir(arg, Path::new("/d/agent")), expected, "{arg:?}");
        };
        check("/d/agent", true);
        check("/d/agent/pods/u/c/bundle", true);
        check("--data-dir=/d/agent", true);
        check("--root=/d/agent/runsc/state", true);
        check("/d/agent2", false);
        check("/d", false);
        check("agent", false);
        check("--data-dir", false);
        check("cd /d/agent/pods && sleep 1", true);
        check("cd /d/agent2/pods", false);
    }

    #[test]
    fn pod_uids_come_from_every_pods_and_sandboxes_dir() {
        let d = tempfile::tempdir().expect("tempdir");
        let uid = |n: u8| format!("{n:08}-0000-0000-0000-000000000000");
        for dir in [
            format!("pods/{}", uid(1)),
            format!("runc/pods/{}", uid(2)),
            format!("sandboxes/{}", uid(3)),
            "pods/not-a-uid".to_string(),
            format!("elsewhere/{}", uid(4)),
        ] {
            std::fs::create_dir_all(d.path().join(dir)).expect("mkdir");
        }
        assert_eq!(
            recorded_pod_uids(d.path()),
            [uid(1), uid(2), uid(3)].into_iter().collect()
        );
    }

    #[test]
    fn a_node_without_anything_has_nothing_to_remove() {
        let d = tempfile::tempdir().expect("tempdir");
        let node = Node {
            data_dir: d.path().join("agent"),
            cgroup_root: d.path().join("cgroup"),
            cgroup_parent: CgroupParent::parse("kumo-test-none").expect("parent"),
        };
        assert_eq!(down(&node, PodScope::AllUnderParent), Vec::new());
    }

    #[test]
    fn the_nodes_pod_cgroups_go_and_its_parent_when_empty() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("cg");
        let uid = "00000001-0000-0000-0000-000000000000";
        for dir in [
            format!("cpu/n1/{uid}/c"),
            format!("pids/n1/{uid}/c"),
            format!("pids/n2/{uid}/c"),
            format!("memory/shared/{uid}/c"),
            "memory/shared/00000009-0000-0000-0000-000000000000/c".to_string(),
        ] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        let node = |parent: &str| Node {
            data_dir: d.path().join("agent"),
            cgroup_root: root.clone(),
            cgroup_parent: CgroupParent::parse(parent).expect("parent"),
        };
        let names = |r: Vec<Removed>| -> Vec<String> {
            r.iter()
                .map(|r| {
                    r.what
                        .trim_start_matches(&*root.to_string_lossy())
                        .to_string()
                })
                .collect()
        };
        let got = names(down(&node("n1"), PodScope::AllUnderParent));
        assert_eq!(
            got,
            [
                format!("/cpu/n1/{uid}/c"),
                format!("/cpu/n1/{uid}"),
                format!("/pids/n1/{uid}/c"),
                format!("/pids/n1/{uid}"),
                "/cpu/n1".to_string(),
                "/pids/n1".to_string(),
            ]
        );
        assert!(
            root.join(format!("pids/n2/{uid}/c")).is_dir(),
            "another node's"
        );
        // A shared parent: only the pods the data dir records, and the parent stays.
        std::fs::create_dir_all(d.path().join("agent/pods").join(uid)).expect("mkdir");
        let got = names(down(&node("shared"), PodScope::Recorded));
        assert_eq!(
            got,
            [
                format!("/memory/shared/{uid}/c"),
                format!("/memory/shared/{uid}")
            ]
        );
        assert!(root
            .join("memory/shared/00000009-0000-0000-0000-000000000000")
            .is_dir());
        assert_eq!(down(&node("n1"), PodScope::AllUnderParent), Vec::new());
    }
}
