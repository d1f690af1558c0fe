//! Re-adoption: what a recorded container is now, judged from its record, exit file and processes.

use crate::record::{ContainerRecord, ExitRecord};
use crate::sys::Sys;
use kumo_api::pod::ContainerStateTerminated;
use kumo_api::Time;

/// What became of a container the agent recorded as started.
#[derive(Debug, Clone, PartialEq)]
pub enum Adoption {
    /// Its process (or its shim, about to write the exit file) is alive: keep supervising it.
    Running,
    /// It ended, and how is known.
    Exited(ContainerStateTerminated),
    /// Neither process nor exit status is left (the machine restarted, the shim was killed).
    Lost(ContainerStateTerminated),
}

/// Liveness of a record's processes, each checked against its recorded start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Liveness {
    pub container: bool,
    pub shim: bool,
}

impl Liveness {
    /// Looks the record's processes up; a pid alive with another start time was reused.
    pub fn probe(sys: &dyn Sys, record: &ContainerRecord) -> Self {
        let alive = |pid: Option<i32>, start: Option<u64>| match (pid, start) {
            (Some(pid), Some(start)) => sys.start_time(pid) == Some(start),
            _ => false,
        };
        Liveness {
            container: alive(record.pid, record.proc_start_time),
            shim: alive(record.shim_pid, record.shim_start_time),
        }
    }
}

/// Decides what a recorded container is now. Pure.
///
/// A known end wins; then the shim's exit file; then a live container or shim means running;
/// with none of these the container is lost, with exit code 255 and reason `Unknown`.
pub fn decide(
    record: &ContainerRecord,
    exit: Option<&ExitRecord>,
    live: Liveness,
    now: Time,
) -> Adoption {
    if let Some(t) = &record.terminated {
        return Adoption::Exited(t.clone());
    }
    if let Some(exit) = exit {
        return Adoption::Exited(exit.terminated(Some(record.started_at)));
    }
    if live.container || live.shim {
        return Adoption::Running;
    }
    Adoption::Lost(ContainerStateTerminated {
        exit_code: 255,
        signal: None,
        reason: Some("Unknown".to_string()),
        message: Some(
            "the container's process ended without a recorded exit status (agent or machine restart)"
                .to_string(),
        ),
        started_at: Some(record.started_at),
        finished_at: Some(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::t;
    use crate::sys::FakeSys;

    fn record() -> ContainerRecord {
        ContainerRecord {
            restart_count: 0,
            pid: Some(200),
            shim_pid: Some(199),
            proc_start_time: Some(5000),
            shim_start_time: Some(4999),
            started_at: t(1),
            terminated: None,
            last_terminated: None,
            oom_kills_at_start: None,
            runtime_id: None,
        }
    }

    fn probe(procs: &[(i32, u64)]) -> Liveness {
        let sys = procs.iter().fold(FakeSys::new(), |sys, &(pid, start)| {
            sys.with_process(pid, start)
        });
        Liveness::probe(&sys, &record())
    }

    #[test]
    fn liveness_checks_start_times_against_pid_reuse() {
        assert_eq!(
            probe(&[(200, 5000), (199, 4999)]),
            Liveness {
                container: true,
                shim: true
            }
        );
        assert_eq!(
            probe(&[(200, 7777)]),
            Liveness {
                container: false,
                shim: false
            }
        );
        assert_eq!(
            probe(&[(199, 4999)]),
            Liveness {
                container: false,
                shim: true
            }
        );
        assert_eq!(probe(&[]), Liveness::default());
    }

    #[test]
    fn decisions() {
        let alive = Liveness {
            container: true,
            shim: true,
        };
        let shim_only = Liveness {
            container: false,
            shim: true,
        };
        let gone = Liveness::default();
        let exit = ExitRecord {
            code: Some(3),
            signal: None,
            start_error: None,
            oom_killed: false,
            finished_at: t(8),
        };

        assert_eq!(decide(&record(), None, alive, t(9)), Adoption::Running);
        // The container exited and its shim is about to write the exit file.
        assert_eq!(decide(&record(), None, shim_only, t(9)), Adoption::Running);

        let Adoption::Exited(term) = decide(&record(), Some(&exit), gone, t(9)) else {
            panic!("expected exited")
        };
        assert_eq!(
            (term.exit_code, term.started_at, term.finished_at),
            (3, Some(t(1)), Some(t(8)))
        );

        let Adoption::Lost(term) = decide(&record(), None, gone, t(9)) else {
            panic!("expected lost")
        };
        assert_eq!(
            (term.exit_code, term.reason.as_deref()),
            (255, Some("Unknown"))
        );
        assert_eq!(term.finished_at, Some(t(9)));

        let mut known = record();
        known.terminated = Some(exit.terminated(Some(t(1))));
        assert_eq!(
            decide(&known, None, gone, t(9)),
            Adoption::Exited(exit.terminated(Some(t(1))))
        );
    }
}
