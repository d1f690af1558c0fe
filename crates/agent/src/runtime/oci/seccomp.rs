//! The default seccomp profile of OCI containers (`default-seccomp.json`, beside this file).
//!
//! Modelled on Docker's and containerd's default: every syscall is refused with `EPERM` unless
//! allowed. The allow-list is what ordinary programs use (files, processes, signals, sockets,
//! timers, memory, threads); left out are the ones that reach past the container: `mount`,
//! `umount2`, `pivot_root`, `swapon`, `reboot`, `kexec_*`, module loading, `bpf`, `perf_event_open`,
//! `ptrace`, `keyctl`, `add_key`, `unshare`/`setns`, `acct`, `settimeofday`/`clock_settime`,
//! `syslog`, `userfaultfd`, `open_by_handle_at`, `quotactl`. `clone` is allowed without namespace
//! flags, `clone3` answers `ENOSYS` (libc then falls back to `clone`), `socket` refuses
//! `AF_VSOCK`, `personality` allows only the harmless personas.

use oci_spec::runtime::LinuxSeccomp;

/// The profile's JSON text.
pub const DEFAULT_PROFILE: &str = include_str!("default-seccomp.json");

/// The default profile as an OCI seccomp section.
pub fn default_profile() -> Result<LinuxSeccomp, serde_json::Error> {
    serde_json::from_str(DEFAULT_PROFILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxSeccompAction;

    #[test]
    fn the_profile_parses_and_denies_by_default() {
        let p = default_profile().expect("valid profile");
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        let allowed: Vec<&String> = p
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names())
            .collect();
        for needed in [
            "execve",
            "read",
            "write",
            "openat",
            "wait4",
            "rt_sigaction",
            "exit_group",
        ] {
            assert!(allowed.iter().any(|n| *n == needed), "{needed} allowed");
        }
        for refused in [
            "mount",
            "ptrace",
            "reboot",
            "unshare",
            "setns",
            "bpf",
            "kexec_load",
        ] {
            assert!(!allowed.iter().any(|n| *n == refused), "{refused} refused");
        }
    }
}
