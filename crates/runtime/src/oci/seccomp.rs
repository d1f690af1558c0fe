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
use std::sync::OnceLock;

/// The profile's JSON text.
pub const DEFAULT_PROFILE: &str = include_str!("default-seccomp.json");

/// The default profile as an OCI seccomp section, for the architectures of this host (made once:
/// the first call reads the kernel's symbol table).
pub fn default_profile() -> Result<LinuxSeccomp, String> {
    static PROFILE: OnceLock<Result<LinuxSeccomp, String>> = OnceLock::new();
    PROFILE
        .get_or_init(|| {
            let abis = std::fs::read_to_string("/proc/kallsyms")
                .ok()
                .and_then(|k| KernelAbis::from_kallsyms(&k));
            profile_for(std::env::consts::ARCH, abis)
        })
        .clone()
}

fn profile_for(arch: &str, abis: Option<KernelAbis>) -> Result<LinuxSeccomp, String> {
    let mut profile: serde_json::Value =
        serde_json::from_str(DEFAULT_PROFILE).map_err(|e| e.to_string())?;
    if let Some(arches) = host_architectures(arch, abis) {
        profile["architectures"] = serde_json::json!(arches);
    }
    serde_json::from_value(profile).map_err(|e| e.to_string())
}

/// Which x86 compat ABIs the running kernel has, read from its symbol table (the syscall
/// dispatchers `ia32_sys_call`/`x32_sys_call`, or the older `*_sys_call_table`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelAbis {
    pub ia32: bool,
    pub x32: bool,
}

impl KernelAbis {
    /// `None` when the table does not show the native dispatcher either (hidden or not
    /// Linux/x86), so nothing is concluded from a missing symbol.
    pub fn from_kallsyms(text: &str) -> Option<KernelAbis> {
        let (mut native, mut ia32, mut x32) = (false, false, false);
        for name in text.lines().filter_map(|l| l.split_whitespace().nth(2)) {
            match name {
                "x64_sys_call" | "sys_call_table" => native = true,
                "ia32_sys_call" | "ia32_sys_call_table" => ia32 = true,
                "x32_sys_call" | "x32_sys_call_table" => x32 = true,
                _ => {}
            }
        }
        native.then_some(KernelAbis { ia32, x32 })
    }
}

/// The host's architecture and the ones its kernel also runs (32-bit compat), as Docker's
/// `archMap` picks them, less an x86 ABI the kernel is known to lack (its syscalls cannot reach
/// the kernel, so rules for it are dead); `None` keeps the profile's full list. Listing only
/// these matters for start time: runc compiles every rule once per listed architecture
/// (measured: `runc run` of kumo's bundle for a trivial container 49.6 ms with x86_64, x86 and
/// x32, 43.0 ms without x32, 33.6 ms without seccomp).
fn host_architectures(arch: &str, abis: Option<KernelAbis>) -> Option<Vec<&'static str>> {
    match arch {
        "x86_64" => {
            let abis = abis.unwrap_or(KernelAbis {
                ia32: true,
                x32: true,
            });
            let mut list = vec!["SCMP_ARCH_X86_64"];
            if abis.ia32 {
                list.push("SCMP_ARCH_X86");
            }
            if abis.x32 {
                list.push("SCMP_ARCH_X32");
            }
            Some(list)
        }
        "aarch64" => Some(vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxSeccompAction;

    fn arches(p: &LinuxSeccomp) -> Vec<String> {
        p.architectures()
            .iter()
            .flatten()
            .map(|a| {
                serde_json::to_value(a)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn the_profile_lists_the_architectures_the_kernel_runs() {
        let both = KernelAbis {
            ia32: true,
            x32: true,
        };
        let p = profile_for("x86_64", Some(both)).expect("valid profile");
        assert_eq!(
            arches(&p),
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        let no_x32 = KernelAbis {
            ia32: true,
            x32: false,
        };
        let p = profile_for("x86_64", Some(no_x32)).expect("valid profile");
        assert_eq!(arches(&p), ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]);
        // Unknown: every x86 ABI stays.
        assert_eq!(arches(&profile_for("x86_64", None).unwrap()).len(), 3);
        assert_eq!(
            arches(&profile_for("aarch64", None).unwrap()),
            ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
        );
        assert_eq!(arches(&profile_for("riscv64", None).unwrap()).len(), 5);
        // This host's profile is one of those, made once.
        assert_eq!(default_profile(), default_profile());
    }

    #[test]
    fn kernel_abis_come_from_the_symbol_table() {
        let table = "ffffffff812491a0 T x64_sys_call\nffffffff8124b880 T ia32_sys_call\n\
                     ffffffff81000000 t other [mod]\n";
        assert_eq!(
            KernelAbis::from_kallsyms(table),
            Some(KernelAbis {
                ia32: true,
                x32: false
            })
        );
        let old = "0000000000000000 R sys_call_table\n0000000000000000 R x32_sys_call_table\n";
        assert_eq!(
            KernelAbis::from_kallsyms(old),
            Some(KernelAbis {
                ia32: false,
                x32: true
            })
        );
        // A table that hides the native dispatcher tells nothing.
        assert_eq!(KernelAbis::from_kallsyms("0 T ia32_sys_call\n"), None);
        assert_eq!(KernelAbis::from_kallsyms(""), None);
    }

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
