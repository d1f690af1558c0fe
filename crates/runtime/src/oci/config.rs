//! The OCI runtime config (`config.json`) of one container run, as a pure function of the pod,
//! the container, the image config and the pod's sandbox.
//!
//! The rules are Kubernetes' and containerd's: `command` replaces the image's Entrypoint and
//! `args` its Cmd (`command` alone drops Cmd); env is the image's, then a default `PATH`, then
//! `HOSTNAME`, then the container's (a later name wins); the working directory is the
//! container's, else the image's, else `/`; the user is `runAsUser`/`runAsGroup` (container
//! over pod), else the image's `User`; capabilities are containerd's default set adjusted by
//! `add`/`drop`; seccomp is the `seccompProfile` in effect (the default profile for
//! `RuntimeDefault` or none set, none for `Unconfined` or a privileged container, the node's
//! file for `Localhost`); `hostNetwork`/`hostPID`/`hostIPC` leave out those namespaces (on a node
//! that allows privileged pods); masked and read-only paths as containerd's.

use super::seccomp;
use super::user::{resolve, Identity};
use crate::cgroup::CFS_PERIOD_US;
use crate::env::DEFAULT_PATH;
use crate::rootfs::ImageConfig;
use kumo_api::pod::{
    canonical_capability, Container, SeccompProfileType, SecurityContext, CAPABILITY_NAMES,
};
use kumo_api::Pod;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccomp, Mount, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;

/// The capabilities a container gets by default (Docker's and containerd's 14).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The most processes a container may have.
pub const PIDS_LIMIT: i64 = 1024;

/// Paths hidden from containers (containerd's list).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths containers may read but not write (containerd's list).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The pod-level things a container run is placed in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sandbox {
    /// The root filesystem made for this run.
    pub rootfs: PathBuf,
    /// The pod's network namespace; `None` gives the container a fresh one with only `lo`.
    pub netns: Option<PathBuf>,
    /// The pod's `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`, to bind-mount.
    pub etc_files: Vec<(String, PathBuf)>,
    /// The host directories of the pod's volumes, by volume name.
    pub volumes: BTreeMap<String, PathBuf>,
    /// `linux.cgroupsPath`.
    pub cgroups_path: String,
    /// The rootfs's `/etc/passwd` and `/etc/group` (empty when it has none).
    pub passwd: String,
    pub group: String,
    /// Whether this node runs privileged containers and pods sharing host namespaces
    /// (`--allow-privileged`).
    pub allow_privileged: bool,
    /// The node's file named by the container's `Localhost` seccomp profile, read by the
    /// driver (`None` when the container has no such profile).
    pub localhost_seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
}

/// Why a container's config cannot be made (`CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn spec_err(e: oci_spec::OciSpecError) -> ConfigError {
    ConfigError(format!("cannot build the OCI config: {e}"))
}

/// The process's argv by Kubernetes' rules.
pub fn process_args(c: &Container, image: &ImageConfig) -> Result<Vec<String>, ConfigError> {
    let args: Vec<String> = if !c.command.is_empty() {
        c.command.iter().chain(&c.args).cloned().collect()
    } else if !c.args.is_empty() {
        image.entrypoint.iter().chain(&c.args).cloned().collect()
    } else {
        image.entrypoint.iter().chain(&image.cmd).cloned().collect()
    };
    if args.is_empty() {
        return Err(ConfigError(format!(
            "no command specified: the image has no Entrypoint or Cmd and container {:?} sets no command",
            c.name
        )));
    }
    Ok(args)
}

/// The environment: the image's, a default `PATH`, `HOSTNAME`, then the container's.
pub fn process_env(pod_name: &str, c: &Container, image: &ImageConfig) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: &str, v: &str| match env
        .iter_mut()
        .find(|(name, _)| name == k)
    {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(&mut env, k, v);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        set(&mut env, "PATH", DEFAULT_PATH);
    }
    set(&mut env, "HOSTNAME", pod_name);
    for e in &c.env {
        set(&mut env, &e.name, &e.value);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The effective capability set (names without `CAP_`), containerd's way: `add: [ALL]` gives
/// all, `drop: [ALL]` removes all, then the named ones are added, then the named ones dropped.
pub fn capability_names(c: &Container) -> Vec<String> {
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone())
        .unwrap_or_default();
    let norm = |v: &[String]| -> Vec<String> {
        v.iter().filter_map(|n| canonical_capability(n)).collect()
    };
    let (add, drop) = (norm(&caps.add), norm(&caps.drop));
    let mut set: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    if add.iter().any(|c| c == "ALL") {
        set = CAPABILITY_NAMES.iter().map(|s| s.to_string()).collect();
    }
    if drop.iter().any(|c| c == "ALL") {
        set.clear();
    }
    for a in add.iter().filter(|c| *c != "ALL") {
        if !set.contains(a) {
            set.push(a.clone());
        }
    }
    set.retain(|c| !drop.contains(c));
    set.sort();
    set
}

fn capabilities(names: &[String]) -> HashSet<Capability> {
    names
        .iter()
        .filter_map(|n| Capability::from_str(n).ok())
        .collect()
}

/// The identity the container runs as, refusing root when `runAsNonRoot` asks.
pub fn identity(
    pod: &Pod,
    c: &Container,
    image: &ImageConfig,
    sb: &Sandbox,
) -> Result<Identity, ConfigError> {
    let csc = c.security_context.as_ref();
    let psc = pod.spec.security_context.as_ref();
    let run_as_user = csc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user));
    let run_as_group = csc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|s| s.run_as_group));
    let non_root = csc
        .and_then(|s| s.run_as_non_root)
        .or(psc.and_then(|s| s.run_as_non_root))
        .unwrap_or(false);
    let id = resolve(
        run_as_user,
        run_as_group,
        image.user.as_deref(),
        &sb.passwd,
        &sb.group,
    )
    .map_err(ConfigError)?;
    if non_root && id.uid == 0 {
        return Err(ConfigError(format!(
            "container has runAsNonRoot and image will run as root (pod: \"{}/{}\", container: {})",
            pod.metadata.ns(),
            pod.metadata.name,
            c.name
        )));
    }
    Ok(id)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, ConfigError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err)
}

fn bind(dest: &str, source: &std::path::Path, read_only: bool) -> Result<Mount, ConfigError> {
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(vec![
            "rbind".to_string(),
            "rprivate".to_string(),
            if read_only { "ro" } else { "rw" }.to_string(),
        ])
        .build()
        .map_err(spec_err)
}

/// The mounts: the kernel filesystems, the pod's `/etc` files, then the volumes.
fn mounts(c: &Container, sb: &Sandbox, privileged: bool) -> Result<Vec<Mount>, ConfigError> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
    ];
    for (dest, source) in &sb.etc_files {
        out.push(bind(dest, source, false)?);
    }
    for (j, m) in c.volume_mounts.iter().enumerate() {
        let source = sb.volumes.get(&m.name).ok_or_else(|| {
            ConfigError(format!(
                "volumeMounts[{j}]: volume {:?} is not prepared on this node",
                m.name
            ))
        })?;
        out.push(bind(&m.mount_path, source, m.read_only)?);
    }
    Ok(out)
}

/// The smallest memory limit a container can start under (Docker's minimum too).
pub const MIN_MEMORY_LIMIT: i64 = 6 << 20;

/// `linux.resources`: memory limit, CPU quota/period and shares, the pids limit, and no device
/// access beyond the runtime's defaults.
fn resources(c: &Container) -> Result<oci_spec::runtime::LinuxResources, ConfigError> {
    let res = &c.resources;
    let mut b = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(spec_err)?])
        .pids(
            LinuxPidsBuilder::default()
                .limit(PIDS_LIMIT)
                .build()
                .map_err(spec_err)?,
        );
    if let Some(mem) = res.limits.get("memory") {
        let bytes = i64::try_from(mem.units_ceil().max(0)).unwrap_or(i64::MAX);
        if bytes < MIN_MEMORY_LIMIT {
            // The runtime's own init runs inside the limit: below this it is killed before the
            // container starts, with an error that does not say why.
            return Err(ConfigError(format!(
                "container {:?}: memory limit {mem} is below the {}Mi an OCI container needs to start",
                c.name,
                MIN_MEMORY_LIMIT >> 20
            )));
        }
        b = b.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .build()
                .map_err(spec_err)?,
        );
    }
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if let Some(q) = res.limits.get("cpu") {
        let quota = (q.millis().max(0) * i128::from(CFS_PERIOD_US) / 1000).max(1000);
        cpu = cpu
            .quota(i64::try_from(quota).unwrap_or(i64::MAX))
            .period(CFS_PERIOD_US);
        any_cpu = true;
    }
    if let Some(r) = res.request("cpu") {
        let shares = (r.millis().max(0) * 1024 / 1000).clamp(2, 262_144);
        cpu = cpu.shares(u64::try_from(shares).unwrap_or(2));
        any_cpu = true;
    }
    if any_cpu {
        b = b.cpu(cpu.build().map_err(spec_err)?);
    }
    b.build().map_err(spec_err)
}

/// The namespaces a container gets: its own PID, IPC, UTS and mount namespaces and the pod's
/// network namespace, less those the pod shares with the host (a node that allows it only).
fn namespaces(pod: &Pod, sb: &Sandbox) -> Result<Vec<LinuxNamespace>, ConfigError> {
    let spec = &pod.spec;
    let shared = spec.host_namespaces();
    if !shared.is_empty() && !sb.allow_privileged {
        return Err(ConfigError(format!(
            "the pod shares the host's namespaces ({}), and this node does not allow host access (start the agent with --allow-privileged)",
            shared.join(", ")
        )));
    }
    let host_network = spec.host_network == Some(true);
    let mut namespaces = Vec::new();
    for (typ, own) in [
        (LinuxNamespaceType::Pid, spec.host_pid != Some(true)),
        (LinuxNamespaceType::Ipc, spec.host_ipc != Some(true)),
        // Kubernetes gives a host-network pod the host's hostname too.
        (LinuxNamespaceType::Uts, !host_network),
        (LinuxNamespaceType::Mount, true),
    ] {
        if own {
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(typ)
                    .build()
                    .map_err(spec_err)?,
            );
        }
    }
    if !host_network {
        let mut net = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
        if let Some(path) = &sb.netns {
            net = net.path(path.clone());
        }
        namespaces.push(net.build().map_err(spec_err)?);
    }
    Ok(namespaces)
}

/// The seccomp filter of a container that is not privileged: the default profile, none
/// (`Unconfined`), or the node's `Localhost` file the driver read.
fn seccomp_profile(
    pod: &Pod,
    c: &Container,
    sb: &Sandbox,
) -> Result<Option<LinuxSeccomp>, ConfigError> {
    let profile = SecurityContext::effective_seccomp(
        c.security_context.as_ref(),
        pod.spec.security_context.as_ref(),
    );
    match profile.type_ {
        SeccompProfileType::RuntimeDefault => seccomp::default_profile()
            .map(Some)
            .map_err(|e| ConfigError(format!("the default seccomp profile is invalid: {e}"))),
        SeccompProfileType::Unconfined => Ok(None),
        SeccompProfileType::Localhost => sb.localhost_seccomp.clone().map(Some).ok_or_else(|| {
            ConfigError(format!(
                "container {:?}: the Localhost seccomp profile {:?} was not loaded",
                c.name,
                profile.localhost_profile.unwrap_or_default()
            ))
        }),
    }
}

/// The runtime config of container `index` of `pod`.
pub fn oci_config(
    pod: &Pod,
    index: usize,
    image: &ImageConfig,
    sb: &Sandbox,
) -> Result<Spec, ConfigError> {
    let c = pod
        .spec
        .containers
        .get(index)
        .ok_or_else(|| ConfigError(format!("the pod has no container {index}")))?;
    let sc = c.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged == Some(true);
    if privileged && !sb.allow_privileged {
        return Err(ConfigError(format!(
            "container {:?} is privileged, and this node does not allow privileged containers (start the agent with --allow-privileged)",
            c.name
        )));
    }
    let cwd = c
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(ConfigError(format!(
            "working directory {cwd:?} is not an absolute path"
        )));
    }
    let id = identity(pod, c, image, sb)?;
    let caps = if privileged {
        CAPABILITY_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        capability_names(c)
    };
    let caps = capabilities(&caps);
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(id.uid)
                .gid(id.gid)
                .build()
                .map_err(spec_err)?,
        )
        .args(process_args(c, image)?)
        .env(process_env(&pod.metadata.name, c, image))
        .cwd(cwd)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()
                .map_err(spec_err)?,
        )
        .no_new_privileges(sc.allow_privilege_escalation == Some(false))
        .build()
        .map_err(spec_err)?;

    let spec = &pod.spec;
    let host_network = spec.host_network == Some(true);
    let namespaces = namespaces(pod, sb)?;

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources(c)?)
        .cgroups_path(PathBuf::from(&sb.cgroups_path));
    if privileged {
        linux = linux.masked_paths(Vec::new()).readonly_paths(Vec::new());
    } else {
        linux = linux
            .masked_paths(
                MASKED_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                READONLY_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            );
        if let Some(profile) = seccomp_profile(pod, c, sb)? {
            linux = linux.seccomp(profile);
        }
    }
    let hostname: String = pod.metadata.name.chars().take(63).collect();
    let mut spec = SpecBuilder::default()
        .hostname(hostname)
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(sb.rootfs.clone())
                .readonly(sc.read_only_root_filesystem == Some(true))
                .build()
                .map_err(spec_err)?,
        )
        .process(process)
        .mounts(mounts(c, sb, privileged)?)
        .linux(linux.build().map_err(spec_err)?)
        .build()
        .map_err(spec_err)?;
    if host_network {
        // Without a UTS namespace of its own the container keeps the host's name.
        spec.set_hostname(None);
    }
    Ok(spec)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
