//! The system calls the runtime makes itself behind one trait, [`Sys`] (as youki's `Syscall`):
//! process liveness and signals, cgroup files and directories, and mounts. [`RealSys`] is the
//! kernel; [`FakeSys`] an in-memory stand-in, so that what uses them is tested without root.
//!
//! Not behind it: the runtime's own data directories (records, logs, bundles: plain files it
//! owns), the shim (a separate process that forks, waits and joins cgroups), `nsexec` (it
//! enters namespaces before it becomes the command), and the OCI runtimes' CLI (`runc`).

mod fake;

pub use fake::FakeSys;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::io;
use std::path::{Path, PathBuf};

/// What the runtime asks the kernel; faked in tests.
pub trait Sys: Send + Sync + 'static {
    /// The start time (field 22 of `/proc/<pid>/stat`) of a live, non-zombie process.
    fn start_time(&self, pid: i32) -> Option<u64>;
    /// Sends `signal` to the process group `pgid`; a group that is gone is not an error.
    fn signal_group(&self, pgid: i32, signal: Signal) -> Result<(), nix::Error>;

    /// Whether `path` is a directory (a cgroup, or a hierarchy's root).
    fn is_dir(&self, path: &Path) -> bool;
    /// Whether `path` is a file (a cgroup's control file).
    fn is_file(&self, path: &Path) -> bool;
    /// Makes cgroup directory `path` and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Writes a cgroup control file.
    fn write(&self, path: &Path, contents: &str) -> io::Result<()>;
    /// Reads a cgroup control file.
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Removes the empty cgroup directory `path`.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// The directories directly under `path` (child cgroups, or a root's hierarchies).
    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>>;

    /// This process's mount table (`/proc/self/mountinfo`).
    fn mountinfo(&self) -> io::Result<String>;
    /// Unmounts `path` lazily (`MNT_DETACH`).
    fn unmount(&self, path: &Path) -> Result<(), nix::Error>;
}

/// The real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealSys;

impl Sys for RealSys {
    fn start_time(&self, pid: i32) -> Option<u64> {
        if pid <= 0 {
            return None;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let s = parse_proc_stat(&stat)?;
        (!matches!(s.state, 'Z' | 'X' | 'x')).then_some(s.start_time)
    }

    fn signal_group(&self, pgid: i32, signal: Signal) -> Result<(), nix::Error> {
        // Never 0 (our own group) or 1 (init); -1 would be every process.
        if pgid <= 1 {
            return Err(nix::Error::EINVAL);
        }
        match nix::sys::signal::killpg(Pid::from_raw(pgid), signal) {
            Err(nix::Error::ESRCH) => Ok(()),
            r => r,
        }
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn write(&self, path: &Path, contents: &str) -> io::Result<()> {
        std::fs::write(path, contents)
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(path)?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect())
    }

    fn mountinfo(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/self/mountinfo")
    }

    fn unmount(&self, path: &Path) -> Result<(), nix::Error> {
        nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
    }
}

/// The fields of `/proc/<pid>/stat` the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

/// Parses `/proc/<pid>/stat`; the command name (field 2) may hold spaces and parentheses.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field 22 (starttime) is at index 19.
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let line = "4242 (my (weird) cmd) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_proc_stat(line),
            Some(ProcStat {
                state: 'S',
                start_time: 987654
            })
        );
        assert_eq!(parse_proc_stat("1 (x) Z 0"), None);
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn reads_our_own_start_time_and_refuses_dangerous_groups() {
        let me = std::process::id() as i32;
        assert!(RealSys.start_time(me).is_some());
        assert_eq!(RealSys.start_time(-5), None);
        assert_eq!(
            RealSys.signal_group(1, Signal::SIGTERM),
            Err(nix::Error::EINVAL)
        );
        assert_eq!(
            RealSys.signal_group(0, Signal::SIGTERM),
            Err(nix::Error::EINVAL)
        );
        assert_eq!(
            RealSys.signal_group(-1, Signal::SIGTERM),
            Err(nix::Error::EINVAL)
        );
    }

    #[test]
    fn the_fake_refuses_what_the_kernel_refuses_and_records_the_rest() {
        let fake = FakeSys::new().with_process(42, 7).with_dir("/cg/a");
        for pgid in [1, 0, -1] {
            assert_eq!(
                fake.signal_group(pgid, Signal::SIGTERM),
                Err(nix::Error::EINVAL)
            );
        }
        fake.signal_group(42, Signal::SIGTERM).expect("term");
        assert_eq!(fake.start_time(42), Some(7));
        fake.signal_group(42, Signal::SIGKILL).expect("kill");
        assert_eq!(fake.start_time(42), None);
        assert_eq!(
            fake.signals(),
            vec![(42, Signal::SIGTERM), (42, Signal::SIGKILL)]
        );
        let kind = |r: std::io::Result<()>| r.map_err(|e| e.kind());
        use std::io::ErrorKind::*;
        assert_eq!(kind(fake.write(Path::new("/cg/b/x"), "1")), Err(NotFound));
        assert_eq!(kind(fake.write(Path::new("/cg/a"), "1")), Err(IsADirectory));
        assert_eq!(
            kind(fake.remove_dir(Path::new("/cg"))),
            Err(DirectoryNotEmpty)
        );
        assert_eq!(kind(fake.remove_dir(Path::new("/cg/b"))), Err(NotFound));
        assert_eq!(fake.unmount(Path::new("/cg")), Err(nix::Error::EINVAL));
    }
}
