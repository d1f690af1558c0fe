//! Per-container cgroups (`kumo/<pod-uid>/<container>`) on cgroup v1 or v2, where writable.
//!
//! The limits become file contents by a pure function (`settings`); `Cgroups` only makes the
//! directories and writes the files. Without a writable hierarchy containers run without limits.

use kumo_api::pod::ResourceRequirements;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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

/// The cgroup hierarchy the agent puts containers in.
#[derive(Debug)]
pub struct Cgroups {
    mode: Mode,
    /// Set after the first failure to write: log once, then run without cgroups.
    broken: AtomicBool,
}

impl Cgroups {
    /// Finds the hierarchy mounted at `root` (normally `/sys/fs/cgroup`).
    pub fn detect(root: &Path) -> Self {
        let mode = if root.join("cgroup.controllers").is_file() {
            Mode::V2 {
                root: root.to_path_buf(),
            }
        } else if root.join("cpu").is_dir() && root.join("memory").is_dir() {
            Mode::V1 {
                cpu: root.join("cpu"),
                memory: root.join("memory"),
            }
        } else {
            Mode::Off
        };
        Cgroups {
            mode,
            broken: AtomicBool::new(false),
        }
    }

    /// No cgroups at all.
    pub fn off() -> Self {
        Cgroups {
            mode: Mode::Off,
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
                (Some(Controller::Cpu), cpu.join("kumo").join(uid)),
                (Some(Controller::Memory), memory.join("kumo").join(uid)),
            ],
            Mode::V2 { root } => vec![(None, root.join("kumo").join(uid))],
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
            let kumo = root.join("kumo");
            std::fs::create_dir_all(kumo.join(uid)).map_err(|e| (kumo.join(uid), e))?;
            for dir in [root.clone(), kumo.clone(), kumo.join(uid)] {
                for c in ["+cpu", "+memory"] {
                    let _ = std::fs::write(dir.join("cgroup.subtree_control"), c);
                }
            }
        }
        let wanted = settings(version, res);
        let mut dirs = Vec::new();
        for (controller, pod_dir) in self.pod_dirs(uid) {
            let dir = pod_dir.join(container);
            std::fs::create_dir_all(&dir).map_err(|e| (dir.clone(), e))?;
            for s in wanted
                .iter()
                .filter(|s| controller.is_none_or(|c| c == s.controller))
            {
                let path = dir.join(s.file);
                std::fs::write(&path, &s.value).map_err(|e| (path, e))?;
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
            .filter(|d| d.is_dir())
            .collect()
    }

    /// How often the kernel's OOM killer has struck in the container's memory cgroup.
    pub fn oom_kills(&self, uid: &str, container: &str) -> Option<u64> {
        let path = match &self.mode {
            Mode::V1 { memory, .. } => memory
                .join("kumo")
                .join(uid)
                .join(container)
                .join("memory.oom_control"),
            Mode::V2 { root } => root
                .join("kumo")
                .join(uid)
                .join(container)
                .join("memory.events"),
            Mode::Off => return None,
        };
        parse_oom_kills(&std::fs::read_to_string(path).ok()?)
    }

    /// Removes one container's cgroups once its run has ended (a restart makes them again), and
    /// the pod's when no container is left, so finished pods hold no cgroup. A cgroup that still
    /// holds an escaped process stays until the pod is deleted.
    pub fn remove_container(&self, uid: &str, container: &str) {
        for (_, pod_dir) in self.pod_dirs(uid) {
            let dir = pod_dir.join(container);
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir(&dir) {
                    tracing::debug!(path = %dir.display(), error = %e, "cannot remove cgroup yet");
                }
            }
            // Fails while other containers of the pod still have theirs: that is expected.
            let _ = std::fs::remove_dir(&pod_dir);
        }
    }

    /// Removes the pod's cgroups (they must be empty of processes by now).
    pub fn remove_pod(&self, uid: &str) {
        for (_, pod_dir) in self.pod_dirs(uid) {
            if let Ok(entries) = std::fs::read_dir(&pod_dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        if let Err(e) = std::fs::remove_dir(entry.path()) {
                            tracing::debug!(path = %entry.path().display(), error = %e, "cannot remove cgroup");
                        }
                    }
                }
            }
            if pod_dir.exists() {
                if let Err(e) = std::fs::remove_dir(&pod_dir) {
                    tracing::debug!(path = %pod_dir.display(), error = %e, "cannot remove cgroup");
                }
            }
        }
    }
}

/// The memory cgroup directory of a container under the hierarchy mounted at `root`, as an
/// OCI runtime makes it for `cgroupsPath` `/kumo/<uid>/<container>`.
pub fn memory_dir(root: &Path, uid: &str, container: &str) -> PathBuf {
    let base = if root.join("cgroup.controllers").is_file() {
        root.to_path_buf()
    } else {
        root.join("memory")
    };
    base.join("kumo").join(uid).join(container)
}

/// Removes `kumo/<uid>` (and its empty children) from every hierarchy mounted under `root`:
/// an OCI runtime makes the container's cgroup in all of them (cpuset, pids, devices, ...)
/// and removes only the leaf. Best effort; a cgroup still holding a process stays.
pub fn remove_pod_everywhere(root: &Path, uid: &str) {
    let mut hierarchies = vec![root.to_path_buf()];
    hierarchies.extend(
        std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path()),
    );
    for h in hierarchies {
        let pod_dir = h.join("kumo").join(uid);
        if !pod_dir.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&pod_dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if let Err(e) = std::fs::remove_dir(entry.path()) {
                    tracing::debug!(path = %entry.path().display(), error = %e, "cannot remove cgroup");
                }
            }
        }
        if let Err(e) = std::fs::remove_dir(&pod_dir) {
            tracing::debug!(path = %pod_dir.display(), error = %e, "cannot remove cgroup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let cg = Cgroups::detect(root.path());
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
        assert_eq!(Cgroups::detect(root.path()).version(), None);
        // A "hierarchy" whose cpu entry is a file cannot take directories.
        std::fs::write(root.path().join("cpu"), b"").expect("write");
        std::fs::create_dir(root.path().join("memory")).expect("mkdir");
        let cg = Cgroups {
            mode: Mode::V1 {
                cpu: root.path().join("cpu"),
                memory: root.path().join("memory"),
            },
            broken: AtomicBool::new(false),
        };
        assert!(cg.setup("u", "c", &res(&[], &[])).is_empty());
        assert!(cg.broken.load(Ordering::Relaxed));
    }
}
