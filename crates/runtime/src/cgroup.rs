//! Per-container cgroups (`<parent>/<pod-uid>/<container>`, the parent `kumo` unless the node
//! names another) on cgroup v1 or v2, where writable.
//!
//! The limits become file contents by a pure function (`settings`); `Cgroups` only makes the
//! directories and writes the files, through [`Sys`]. Without a writable hierarchy containers
//! run without limits.

use crate::cgroup_parent::CgroupParent;
use crate::sys::{RealSys, Sys};
use kumo_api::pod::ResourceRequirements;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The CFS period used for CPU limits, in microseconds.
pub const CFS_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Cpu,
    Memory,
}

/// One file to write in a container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub controller: Controller,
    pub file: &'static str,
    pub value: String,
}

fn setting(controller: Controller, file: &'static str, value: impl ToString) -> Setting {
    Setting {
        controller,
        file,
        value: value.to_string(),
    }
}

/// The cgroup files that express a container's resources. Pure.
///
/// memory limit → `memory.limit_in_bytes` / `memory.max`; cpu limit → CFS quota over a 100 ms
/// period; cpu request (defaulting to the limit) → `cpu.shares` / `cpu.weight`.
pub fn settings(version: CgroupVersion, res: &ResourceRequirements) -> Vec<Setting> {
    use Controller::*;
    let mut out = Vec::new();
    if let Some(mem) = res.limits.get("memory") {
        let bytes = mem.units_ceil().max(0);
        match version {
            CgroupVersion::V1 => out.push(setting(Memory, "memory.limit_in_bytes", bytes)),
            CgroupVersion::V2 => out.push(setting(Memory, "memory.max", bytes)),
        }
    }
    if let Some(cpu) = res.limits.get("cpu") {
        // millicores * period / 1000, never under the kernel's 1 ms minimum.
        let quota = (cpu.millis().max(0) as u128 * u128::from(CFS_PERIOD_US) / 1000).max(1000);
        match version {
            CgroupVersion::V1 => {
                out.push(setting(Cpu, "cpu.cfs_period_us", CFS_PERIOD_US));
                out.push(setting(Cpu, "cpu.cfs_quota_us", quota));
            }
            CgroupVersion::V2 => {
                out.push(setting(Cpu, "cpu.max", format!("{quota} {CFS_PERIOD_US}")))
            }
        }
    }
    if let Some(cpu) = res.request("cpu") {
        let shares = (cpu.millis().max(0) as u128 * 1024 / 1000).clamp(2, 262_144);
        match version {
            CgroupVersion::V1 => out.push(setting(Cpu, "cpu.shares", shares)),
            // The conversion Kubernetes uses from shares [2, 262144] to weight [1, 10000].
            CgroupVersion::V2 => out.push(setting(
                Cpu,
                "cpu.weight",
                1 + ((shares - 2) * 9999) / 262_142,
            )),
        }
    }
    out
}

/// The `oom_kill` counter of `memory.oom_control` (v1) or `memory.events` (v2).
pub fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[derive(Debug, Clone)]
enum Mode {
    V1 { cpu: PathBuf, memory: PathBuf },
    V2 { root: PathBuf },
    Off,
}

/// The cgroup hierarchy the runtime puts containers in.
pub struct Cgroups {
    sys: Arc<dyn Sys>,
    mode: Mode,
    /// Every pod cgroup is `<hierarchy>/<parent>/<uid>`.
    parent: CgroupParent,
    /// Set after the first failure to write: log once, then run without cgroups.
    broken: AtomicBool,
}

impl Cgroups {
    /// Finds the hierarchy mounted at `root` (normally `/sys/fs/cgroup`); pod cgroups go under
    /// `parent` in it.
    pub fn detect(sys: Arc<dyn Sys>, root: &Path, parent: CgroupParent) -> Self {
        let mode = if sys.is_file(&root.join("cgroup.controllers")) {
            Mode::V2 {
                root: root.to_path_buf(),
            }
        } else if sys.is_dir(&root.join("cpu")) && sys.is_dir(&root.join("memory")) {
            Mode::V1 {
                cpu: root.join("cpu"),
                memory: root.join("memory"),
            }
        } else {
            Mode::Off
        };
        Cgroups {
            sys,
            mode,
            parent,
            broken: AtomicBool::new(false),
        }
    }

    /// No cgroups at all.
    pub fn off() -> Self {
        Cgroups {
            sys: Arc::new(RealSys),
            mode: Mode::Off,
            parent: CgroupParent::default(),
            broken: AtomicBool::new(false),
        }
    }

    pub fn version(&self) -> Option<CgroupVersion> {
        match self.mode {
            Mode::V1 { .. } => Some(CgroupVersion::V1),
            Mode::V2 { .. } => Some(CgroupVersion::V2),
            Mode::Off => None,
        }
    }

    fn pod_dirs(&self, uid: &str) -> Vec<(Option<Controller>, PathBuf)> {
        match &self.mode {
            Mode::V1 { cpu, memory } => vec![
                (Some(Controller::Cpu), self.parent.under(cpu).join(uid)),
                (
                    Some(Controller::Memory),
                    self.parent.under(memory).join(uid),
                ),
            ],
            Mode::V2 { root } => vec![(None, self.parent.under(root).join(uid))],
            Mode::Off => Vec::new(),
        }
    }

    /// Makes the container's cgroups and writes its limits; returns the directories whose
    /// `cgroup.procs` the shim must join. Failure disables cgroups (logged once), never the pod.
    pub fn setup(&self, uid: &str, container: &str, res: &ResourceRequirements) -> Vec<PathBuf> {
        let Some(version) = self.version() else {
            return Vec::new();
        };
        if self.broken.load(Ordering::Relaxed) {
            return Vec::new();
        }
        match self.try_setup(version, uid, container, res) {
            Ok(dirs) => dirs,
            Err((path, e)) => {
                if !self.broken.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %path.display(), error = %e, "cgroups are not writable; running containers without resource limits");
                }
                Vec::new()
            }
        }
    }

    fn try_setup(
        &self,
        version: CgroupVersion,
        uid: &str,
        container: &str,
        res: &ResourceRequirements,
    ) -> Result<Vec<PathBuf>, (PathBuf, std::io::Error)> {
        if let Mode::V2 { root } = &self.mode {
            // Delegate cpu and memory down to the container level (best effort per level).
            let pod = self.parent.under(root).join(uid);
            self.sys
                .create_dir_all(&pod)
                .map_err(|e| (pod.clone(), e))?;
            let mut levels = vec![root.clone()];
            levels.extend(self.parent.levels(root));
            levels.push(pod);
            for dir in levels {
                for c in ["+cpu", "+memory"] {
                    let _ = self.sys.write(&dir.join("cgroup.subtree_control"), c);
                }
            }
        }
        let wanted = settings(version, res);
        let mut dirs = Vec::new();
        for (controller, pod_dir) in self.pod_dirs(uid) {
            let dir = pod_dir.join(container);
            self.sys
                .create_dir_all(&dir)
                .map_err(|e| (dir.clone(), e))?;
            for s in wanted
                .iter()
                .filter(|s| controller.is_none_or(|c| c == s.controller))
            {
                let path = dir.join(s.file);
                self.sys.write(&path, &s.value).map_err(|e| (path, e))?;
            }
            dirs.push(dir);
        }
        Ok(dirs)
    }

    /// The container's existing cgroup directories (for a process joining it, as `exec` does).
    pub fn container_dirs(&self, uid: &str, container: &str) -> Vec<PathBuf> {
        self.pod_dirs(uid)
            .into_iter()
            .map(|(_, d)| d.join(container))
            .filter(|d| self.sys.is_dir(d))
            .collect()
    }

    /// How often the kernel's OOM killer has struck in the container's memory cgroup.
    pub fn oom_kills(&self, uid: &str, container: &str) -> Option<u64> {
        let path = match &self.mode {
            Mode::V1 { memory, .. } => self
                .parent
                .under(memory)
                .join(uid)
                .join(container)
                .join("memory.oom_control"),
            Mode::V2 { root } => self
                .parent
                .under(root)
                .join(uid)
                .join(container)
                .join("memory.events"),
            Mode::Off => return None,
        };
        parse_oom_kills(&self.sys.read_to_string(&path).ok()?)
    }

    /// Removes one container's cgroups once its run has ended (a restart makes them again), and
    /// the pod's when no container is left, so finished pods hold no cgroup. A cgroup that still
    /// holds an escaped process stays until the pod is deleted.
    pub fn remove_container(&self, uid: &str, container: &str) {
        for (_, pod_dir) in self.pod_dirs(uid) {
            let dir = pod_dir.join(container);
            if self.sys.is_dir(&dir) {
                if let Err(e) = self.sys.remove_dir(&dir) {
                    tracing::debug!(path = %dir.display(), error = %e, "cannot remove cgroup yet");
                }
            }
            // Fails while other containers of the pod still have theirs: that is expected.
            let _ = self.sys.remove_dir(&pod_dir);
        }
    }

    /// Removes the pod's cgroups (they must be empty of processes by now).
    pub fn remove_pod(&self, uid: &str) {
        for (_, pod_dir) in self.pod_dirs(uid) {
            remove_children(&*self.sys, &pod_dir);
            if self.sys.is_dir(&pod_dir) {
                if let Err(e) = self.sys.remove_dir(&pod_dir) {
                    tracing::debug!(path = %pod_dir.display(), error = %e, "cannot remove cgroup");
                }
            }
        }
    }
}

/// The memory cgroup directory of a container under the hierarchy mounted at `root`, as an
/// OCI runtime makes it for `cgroupsPath` `/<parent>/<uid>/<container>`.
pub fn memory_dir(
    sys: &dyn Sys,
    root: &Path,
    parent: &CgroupParent,
    uid: &str,
    container: &str,
) -> PathBuf {
    let base = if sys.is_file(&root.join("cgroup.controllers")) {
        root.to_path_buf()
    } else {
        root.join("memory")
    };
    parent.under(&base).join(uid).join(container)
}

/// Removes `<parent>/<uid>` (and its empty children) from every hierarchy mounted under `root`:
/// an OCI runtime makes the container's cgroup in all of them (cpuset, pids, devices, ...)
/// and removes only the leaf. Best effort; a cgroup still holding a process stays.
pub fn remove_pod_everywhere(sys: &dyn Sys, root: &Path, parent: &CgroupParent, uid: &str) {
    for pod_dir in pod_dirs_everywhere(sys, root, parent, uid) {
        remove_children(sys, &pod_dir);
        if let Err(e) = sys.remove_dir(&pod_dir) {
            tracing::debug!(path = %pod_dir.display(), error = %e, "cannot remove cgroup");
        }
    }
}

/// The hierarchies mounted under `root`: `root` itself (v2, or the hybrid's unified mount
/// point's parent) and each directory in it (v1's `cpu`, `memory`, `pids`, ..., `unified`).
pub fn hierarchies(sys: &dyn Sys, root: &Path) -> Vec<PathBuf> {
    let mut subdirs = sys.subdirs(root).unwrap_or_default();
    subdirs.sort();
    let mut all = vec![root.to_path_buf()];
    all.extend(subdirs);
    all
}

/// The existing `<hierarchy>/<parent>/<uid>` directories of a pod, in every hierarchy.
pub fn pod_dirs_everywhere(
    sys: &dyn Sys,
    root: &Path,
    parent: &CgroupParent,
    uid: &str,
) -> Vec<PathBuf> {
    hierarchies(sys, root)
        .into_iter()
        .map(|h| parent.under(&h).join(uid))
        .filter(|d| sys.is_dir(d))
        .collect()
}

/// Removes the (empty) cgroups directly under `dir`; best effort.
fn remove_children(sys: &dyn Sys, dir: &Path) {
    for child in sys.subdirs(dir).unwrap_or_default() {
        if let Err(e) = sys.remove_dir(&child) {
            tracing::debug!(path = %child.display(), error = %e, "cannot remove cgroup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::FakeSys;
    use kumo_api::Quantity;

    fn res(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), Quantity::parse(v).expect("quantity")))
                .collect()
        };
        ResourceRequirements {
            requests: map(requests),
            limits: map(limits),
        }
    }

    fn check(version: CgroupVersion, r: ResourceRequirements, expected: &[(&str, &str)]) {
        let got: Vec<(&str, String)> = settings(version, &r)
            .into_iter()
            .map(|s| (s.file, s.value))
            .collect();
        let expected: Vec<(&str, String)> =
            expected.iter().map(|(f, v)| (*f, v.to_string())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn limits_become_v1_files() {
        use CgroupVersion::V1;
        check(V1, res(&[], &[]), &[]);
        check(
            V1,
            res(&[("cpu", "250m")], &[("cpu", "500m"), ("memory", "64Mi")]),
            &[
                ("memory.limit_in_bytes", "67108864"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "50000"),
                ("cpu.shares", "256"),
            ],
        );
        // The request defaults to the limit; tiny limits are raised to the kernel minimum.
        check(
            V1,
            res(&[], &[("cpu", "1m")]),
            &[
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "1000"),
                ("cpu.shares", "2"),
            ],
        );
        check(V1, res(&[("cpu", "2")], &[]), &[("cpu.shares", "2048")]);
    }

    #[test]
    fn limits_become_v2_files() {
        use CgroupVersion::V2;
        check(
            V2,
            res(&[("cpu", "1")], &[("cpu", "1500m"), ("memory", "1G")]),
            &[
                ("memory.max", "1000000000"),
                ("cpu.max", "150000 100000"),
                ("cpu.weight", "39"),
            ],
        );
        check(V2, res(&[("cpu", "1m")], &[]), &[("cpu.weight", "1")]);
    }

    #[test]
    fn oom_kill_counters() {
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kills("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn setup_writes_limits_into_a_v1_hierarchy() {
        let root = tempfile::tempdir().expect("tempdir");
        for c in ["cpu", "memory"] {
            std::fs::create_dir(root.path().join(c)).expect("mkdir");
        }
        let cg = Cgroups::detect(Arc::new(RealSys), root.path(), CgroupParent::default());
        assert_eq!(cg.version(), Some(CgroupVersion::V1));
        let dirs = cg.setup("u1", "c", &res(&[], &[("cpu", "1"), ("memory", "1Mi")]));
        assert_eq!(
            dirs,
            vec![
                root.path().join("cpu/kumo/u1/c"),
                root.path().join("memory/kumo/u1/c")
            ]
        );
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).expect("read");
        assert_eq!(read("memory/kumo/u1/c/memory.limit_in_bytes"), "1048576");
        assert_eq!(read("cpu/kumo/u1/c/cpu.cfs_quota_us"), "100000");
        assert!(!root
            .path()
            .join("cpu/kumo/u1/c/memory.limit_in_bytes")
            .exists());
    }

    #[test]
    fn an_unwritable_or_missing_hierarchy_runs_without_cgroups() {
        let root = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Cgroups::detect(Arc::new(RealSys), root.path(), CgroupParent::default()).version(),
            None
        );
        // A "hierarchy" whose cpu entry is a file cannot take directories.
        std::fs::write(root.path().join("cpu"), b"").expect("write");
        std::fs::create_dir(root.path().join("memory")).expect("mkdir");
        let cg = Cgroups {
            sys: Arc::new(RealSys),
            mode: Mode::V1 {
                cpu: root.path().join("cpu"),
                memory: root.path().join("memory"),
            },
            parent: CgroupParent::default(),
            broken: AtomicBool::new(false),
        };
        assert!(cg.setup("u", "c", &res(&[], &[])).is_empty());
        assert!(cg.broken.load(Ordering::Relaxed));
    }

    /// A v2 hierarchy in a fake kernel, with `root` its mount point.
    fn fake_v2() -> (Arc<FakeSys>, Cgroups) {
        let sys = Arc::new(FakeSys::new().with_file("/cg/cgroup.controllers", "cpu memory"));
        let cg = Cgroups::detect(sys.clone(), Path::new("/cg"), CgroupParent::default());
        (sys, cg)
    }

    #[test]
    fn setup_delegates_and_writes_limits_into_a_v2_hierarchy() {
        let (sys, cg) = fake_v2();
        assert_eq!(cg.version(), Some(CgroupVersion::V2));
        let dirs = cg.setup("u1", "c", &res(&[], &[("cpu", "500m"), ("memory", "1Mi")]));
        assert_eq!(dirs, vec![PathBuf::from("/cg/kumo/u1/c")]);
        // The fake keeps a control file's last write; the kernel adds each controller.
        for (file, expected) in [
            ("/cg/cgroup.subtree_control", Some("+memory")),
            ("/cg/kumo/cgroup.subtree_control", Some("+memory")),
            ("/cg/kumo/u1/cgroup.subtree_control", Some("+memory")),
            ("/cg/kumo/u1/c/memory.max", Some("1048576")),
            ("/cg/kumo/u1/c/cpu.max", Some("50000 100000")),
            ("/cg/kumo/u1/c/cgroup.subtree_control", None),
        ] {
            assert_eq!(sys.file(file).as_deref(), expected, "{file}");
        }
        assert_eq!(cg.container_dirs("u1", "c"), dirs);
        assert!(cg.container_dirs("u1", "other").is_empty());
    }

    #[test]
    fn oom_kills_are_read_from_the_containers_memory_events() {
        let (sys, cg) = fake_v2();
        assert_eq!(cg.oom_kills("u1", "c"), None);
        cg.setup("u1", "c", &res(&[], &[]));
        sys.write(
            Path::new("/cg/kumo/u1/c/memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .expect("write");
        assert_eq!(cg.oom_kills("u1", "c"), Some(1));
        assert_eq!(Cgroups::off().oom_kills("u1", "c"), None);
    }

    #[test]
    fn a_pods_cgroup_goes_with_its_last_container() {
        let (sys, cg) = fake_v2();
        for c in ["a", "b"] {
            cg.setup("u1", c, &res(&[], &[]));
        }
        let pod = Path::new("/cg/kumo/u1");
        cg.remove_container("u1", "a");
        assert!(!sys.is_dir(&pod.join("a")) && sys.is_dir(pod));
        cg.remove_container("u1", "b");
        assert!(!sys.is_dir(pod));
        // remove_pod takes whatever containers are left at once.
        for c in ["a", "b"] {
            cg.setup("u2", c, &res(&[], &[]));
        }
        cg.remove_pod("u2");
        assert_eq!(
            sys.dirs(),
            ["/", "/cg", "/cg/kumo"].map(PathBuf::from).to_vec()
        );
    }

    #[test]
    fn an_oci_pods_cgroups_are_removed_from_every_hierarchy() {
        let kumo = CgroupParent::default();
        let sys = FakeSys::new()
            .with_dir("/cg/cpu/kumo/u1/c")
            .with_dir("/cg/memory/kumo/u1/c")
            .with_dir("/cg/pids/kumo/u1")
            .with_dir("/cg/pids/kumo/u2/c");
        assert_eq!(
            memory_dir(&sys, Path::new("/cg"), &kumo, "u1", "c"),
            PathBuf::from("/cg/memory/kumo/u1/c")
        );
        remove_pod_everywhere(&sys, Path::new("/cg"), &kumo, "u1");
        let left: Vec<PathBuf> = sys
            .dirs()
            .into_iter()
            .filter(|d| d.starts_with("/cg") && d.components().count() > 4)
            .collect();
        assert_eq!(
            left,
            ["/cg/pids/kumo/u2", "/cg/pids/kumo/u2/c"]
                .map(PathBuf::from)
                .to_vec()
        );
        // On v2 the memory controller is in the one hierarchy.
        let v2 = FakeSys::new().with_file("/cg/cgroup.controllers", "");
        assert_eq!(
            memory_dir(&v2, Path::new("/cg"), &kumo, "u1", "c"),
            PathBuf::from("/cg/kumo/u1/c")
        );
    }
    #[test]
    fn another_parent_holds_the_nodes_cgroups_and_delegates_at_every_level() {
        let sys = Arc::new(FakeSys::new().with_file("/cg/cgroup.controllers", "cpu memory"));
        let parent = CgroupParent::parse("nodes/n1").expect("parent");
        let cg = Cgroups::detect(sys.clone(), Path::new("/cg"), parent.clone());
        let dirs = cg.setup("u1", "c", &res(&[], &[("memory", "1Mi")]));
        assert_eq!(dirs, vec![PathBuf::from("/cg/nodes/n1/u1/c")]);
        for file in [
            "/cg/cgroup.subtree_control",
            "/cg/nodes/cgroup.subtree_control",
            "/cg/nodes/n1/cgroup.subtree_control",
            "/cg/nodes/n1/u1/cgroup.subtree_control",
        ] {
            assert_eq!(sys.file(file).as_deref(), Some("+memory"), "{file}");
        }
        assert!(!sys.is_dir(Path::new("/cg/kumo")));
        assert_eq!(
            memory_dir(&*sys, Path::new("/cg"), &parent, "u1", "c"),
            PathBuf::from("/cg/nodes/n1/u1/c")
        );
        // Another node's pod of the same uid (under the default parent) is not this node's.
        sys.create_dir_all(Path::new("/cg/kumo/u1/c"))
            .expect("mkdir");
        remove_pod_everywhere(&*sys, Path::new("/cg"), &parent, "u1");
        assert!(!sys.is_dir(Path::new("/cg/nodes/n1/u1")));
        assert!(sys.is_dir(Path::new("/cg/kumo/u1/c")));
    }
}
