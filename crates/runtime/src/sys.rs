//! The kernel-touching bits of the runtime (process liveness, signals) behind a trait.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// What the runtime asks the kernel; faked in tests.
pub trait Sys: Send + Sync + 'static {
    /// The start time (field 22 of `/proc/<pid>/stat`) of a live, non-zombie process.
    fn start_time(&self, pid: i32) -> Option<u64>;
    /// Sends `signal` to the process group `pgid`; a group that is gone is not an error.
    fn signal_group(&self, pgid: i32, signal: Signal) -> Result<(), nix::Error>;
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
}
