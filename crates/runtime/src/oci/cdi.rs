//! CDI (Container Device Interface) specs for GPUs: when a spec of kind `nvidia.com/gpu` is
//! installed (`nvidia-ctk cdi generate` writes one to `/etc/cdi` or `/var/run/cdi`), a runc
//! container given GPUs gets what the spec says for exactly its devices — device nodes, driver
//! libraries (mounts), hooks, environment — instead of kumo's bare `/dev/nvidia*` nodes.
//!
//! Parsing and resolving are pure; [`load`] reads the spec directories and [`apply`] stats the
//! device nodes it adds. Specs are read at each GPU container start, so a spec installed while
//! the agent runs is used by the next start.
//!
//! As in the CDI reference library: a spec that cannot be read or parsed is skipped (and
//! logged); a later directory wins over an earlier one for the same device; a device asked for
//! that no spec of the kind names is an error, not a silent fallback.

use crate::gpus::{CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES};
use oci_spec::runtime::{
    Hook, HookBuilder, Hooks, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, Mount, MountBuilder, Spec,
};
use serde::Deserialize;
use std::path::PathBuf;

/// The kind NVIDIA's specs declare, and the only one kumo asks for.
pub const GPU_KIND: &str = "nvidia.com/gpu";

/// Where CDI specs are installed, lowest priority first (the CDI defaults).
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// Environment variables kumo sets for the devices it assigned; a spec's value (NVIDIA's say
/// `NVIDIA_VISIBLE_DEVICES=void`, meant for the legacy runtime hook, which kumo does not run)
/// does not replace them, so the container sees which GPUs it was given.
const KUMO_GPU_ENV: [&str; 2] = [CUDA_VISIBLE_DEVICES, NVIDIA_VISIBLE_DEVICES];

/// The name of a `NAME=VALUE` entry.
fn env_name(var: &str) -> &str {
    var.split_once('=').map_or(var, |(n, _)| n)
}

/// Sets `var` (`NAME=VALUE`) in an OCI environment, replacing any entry of the same name.
pub fn set_env(env: &mut Vec<String>, var: String) {
    let name = env_name(&var).to_string();
    env.retain(|v| env_name(v) != name);
    env.push(var);
}

/// A CDI spec file (the fields kumo applies; others, such as annotations, are ignored).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CdiSpec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default)]
    pub devices: Vec<CdiDevice>,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CdiDevice {
    pub name: String,
    #[serde(default)]
    pub container_edits: ContainerEdits,
}

/// What a spec or one of its devices adds to a container.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerEdits {
    pub env: Vec<String>,
    pub device_nodes: Vec<DeviceNode>,
    pub hooks: Vec<CdiHook>,
    pub mounts: Vec<CdiMount>,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// The path in the container (and on the host, unless `host_path` says otherwise).
    pub path: String,
    pub host_path: Option<String>,
    #[serde(rename = "type")]
    pub typ: Option<String>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub file_mode: Option<u32>,
    /// Device cgroup access (`rwm` unless given).
    pub permissions: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CdiHook {
    /// The OCI hook list: prestart, createRuntime, createContainer, startContainer, poststart,
    /// poststop.
    pub hook_name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub timeout: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CdiMount {
    pub host_path: String,
    pub container_path: String,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(rename = "type")]
    pub typ: Option<String>,
}

/// A spec and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedSpec {
    pub file: PathBuf,
    pub spec: CdiSpec,
}

/// Parses a spec file's text (`yaml` for `.yaml`/`.yml`, else JSON) and checks what kumo
/// relies on.
pub fn parse(text: &str, yaml: bool) -> Result<CdiSpec, String> {
    let spec: CdiSpec = if yaml {
        serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    };
    if spec.cdi_version.is_empty() {
        return Err("cdiVersion is empty".into());
    }
    let Some((vendor, class)) = spec.kind.split_once('/') else {
        return Err(format!("kind {:?} is not vendor/class", spec.kind));
    };
    if vendor.is_empty() || class.is_empty() {
        return Err(format!("kind {:?} is not vendor/class", spec.kind));
    }
    for (i, d) in spec.devices.iter().enumerate() {
        if d.name.is_empty() {
            return Err(format!("devices[{i}].name is empty"));
        }
        check_edits(&d.container_edits, &format!("devices[{i}].containerEdits"))?;
    }
    check_edits(&spec.container_edits, "containerEdits")?;
    Ok(spec)
}

fn check_edits(e: &ContainerEdits, at: &str) -> Result<(), String> {
    for (i, v) in e.env.iter().enumerate() {
        if !v.contains('=') {
            return Err(format!("{at}.env[{i}]: {v:?} is not NAME=VALUE"));
        }
    }
    for (i, d) in e.device_nodes.iter().enumerate() {
        if !d.path.starts_with('/') {
            return Err(format!(
                "{at}.deviceNodes[{i}].path {:?} is not absolute",
                d.path
            ));
        }
        if let Some(t) = &d.typ {
            device_type(t).map_err(|e| format!("{at}.deviceNodes[{i}].type: {e}"))?;
        }
    }
    for (i, h) in e.hooks.iter().enumerate() {
        hook_list(&mut Hooks::default(), &h.hook_name)
            .map_err(|e| format!("{at}.hooks[{i}].hookName: {e}"))?;
        if !h.path.starts_with('/') {
            return Err(format!("{at}.hooks[{i}].path {:?} is not absolute", h.path));
        }
    }
    for (i, m) in e.mounts.iter().enumerate() {
        if !m.container_path.starts_with('/') {
            return Err(format!(
                "{at}.mounts[{i}].containerPath {:?} is not absolute",
                m.container_path
            ));
        }
    }
    Ok(())
}

/// Every readable, valid spec in `dirs` (lowest priority first; files of a directory by name),
/// and a message for each file skipped.
pub fn load(dirs: &[PathBuf]) -> (Vec<LoadedSpec>, Vec<String>) {
    let (mut specs, mut skipped) = (Vec::new(), Vec::new());
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue; // not installed: nothing to read
        };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files {
            let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
            let yaml = matches!(ext, "yaml" | "yml");
            if !yaml && ext != "json" {
                continue;
            }
            match std::fs::read_to_string(&file)
                .map_err(|e| e.to_string())
                .and_then(|text| parse(&text, yaml))
            {
                Ok(spec) => specs.push(LoadedSpec { file, spec }),
                Err(e) => skipped.push(format!("CDI spec {}: {e}", file.display())),
            }
        }
    }
    (specs, skipped)
}

/// What the container gets for its GPUs: the edits of each spec that names one of them (once)
/// and of each device, in the order of `names`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    pub edits: Vec<ContainerEdits>,
    /// The spec files used, for messages.
    pub files: Vec<PathBuf>,
}

/// Resolves the GPUs by their names in the specs: each entry of `names` lists the names one
/// device may have (its index, then its UUID). `None` when no spec of [`GPU_KIND`] is
/// installed (the caller falls back to device nodes).
pub fn resolve(specs: &[LoadedSpec], names: &[Vec<String>]) -> Result<Option<Resolved>, String> {
    let of_kind: Vec<&LoadedSpec> = specs.iter().filter(|s| s.spec.kind == GPU_KIND).collect();
    if of_kind.is_empty() || names.is_empty() {
        return Ok(None);
    }
    let mut out = Resolved::default();
    let mut device_edits = Vec::new();
    for aliases in names {
        // The highest-priority spec (the last loaded) that names the device wins.
        let found = aliases.iter().find_map(|name| {
            of_kind.iter().rev().find_map(|s| {
                s.spec
                    .devices
                    .iter()
                    .find(|d| &d.name == name)
                    .map(|d| (*s, d))
            })
        });
        let Some((spec, device)) = found else {
            let known: Vec<String> = of_kind
                .iter()
                .map(|s| {
                    let names: Vec<&str> = s.spec.devices.iter().map(|d| d.name.as_str()).collect();
                    format!("{} has {}", s.file.display(), names.join(", "))
                })
                .collect();
            return Err(format!(
                "no CDI device {GPU_KIND}={} ({})",
                aliases.join(" or "),
                known.join("; ")
            ));
        };
        if !out.files.contains(&spec.file) {
            out.files.push(spec.file.clone());
            out.edits.push(spec.spec.container_edits.clone());
        }
        device_edits.push(device.container_edits.clone());
    }
    out.edits.extend(device_edits);
    Ok(Some(out))
}

fn device_type(t: &str) -> Result<LinuxDeviceType, String> {
    Ok(match t {
        "c" => LinuxDeviceType::C,
        "u" => LinuxDeviceType::U,
        "b" => LinuxDeviceType::B,
        "p" => LinuxDeviceType::P,
        other => return Err(format!("{other:?} is not one of c, u, b, p")),
    })
}

fn hook_list<'a>(hooks: &'a mut Hooks, name: &str) -> Result<&'a mut Vec<Hook>, String> {
    let list = match name {
        "prestart" => hooks.prestart_mut(),
        "createRuntime" => hooks.create_runtime_mut(),
        "createContainer" => hooks.create_container_mut(),
        "startContainer" => hooks.start_container_mut(),
        "poststart" => hooks.poststart_mut(),
        "poststop" => hooks.poststop_mut(),
        other => return Err(format!("{other:?} is not an OCI hook (prestart, createRuntime, createContainer, startContainer, poststart, poststop)")),
    };
    Ok(list.get_or_insert_with(Vec::new))
}

/// A device node as the host has it: type, numbers and mode from `stat` where the spec leaves
/// them out.
fn host_device(node: &DeviceNode) -> Result<(LinuxDevice, LinuxDeviceCgroup), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let host = node.host_path.as_deref().unwrap_or(&node.path);
    let needs_stat = node.typ.is_none() || node.major.is_none() || node.minor.is_none();
    let meta = if needs_stat || node.file_mode.is_none() {
        match std::fs::metadata(host) {
            Ok(m) => Some(m),
            Err(e) if needs_stat => return Err(format!("device node {host}: {e}")),
            Err(_) => None,
        }
    } else {
        None
    };
    let typ = match (&node.typ, &meta) {
        (Some(t), _) => device_type(t)?,
        (None, Some(m)) if m.file_type().is_char_device() => LinuxDeviceType::C,
        (None, Some(m)) if m.file_type().is_block_device() => LinuxDeviceType::B,
        (None, Some(m)) if m.file_type().is_fifo() => LinuxDeviceType::P,
        (None, _) => return Err(format!("{host} is not a device node")),
    };
    let (stat_major, stat_minor) = meta
        .as_ref()
        .map(|m| super::gpu_devices::split_rdev(m.rdev()))
        .unwrap_or_default();
    let major = node.major.unwrap_or(stat_major);
    let minor = node.minor.unwrap_or(stat_minor);
    let mode = node
        .file_mode
        .or_else(|| meta.as_ref().map(|m| m.mode() & 0o777));
    let mut dev = LinuxDeviceBuilder::default()
        .path(node.path.clone())
        .typ(typ)
        .major(major)
        .minor(minor);
    if let Some(mode) = mode {
        dev = dev.file_mode(mode);
    }
    if let Some(uid) = node.uid {
        dev = dev.uid(uid);
    }
    if let Some(gid) = node.gid {
        dev = dev.gid(gid);
    }
    let dev = dev
        .build()
        .map_err(|e| format!("device {}: {e}", node.path))?;
    let rule = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .major(major)
        .minor(minor)
        .access(node.permissions.clone().unwrap_or_else(|| "rwm".into()))
        .build()
        .map_err(|e| format!("device {}: {e}", node.path))?;
    Ok((dev, rule))
}

/// Applies `edits` to the container's runtime config: environment (a spec's value replaces the
/// image's or the pod's, except kumo's GPU variables), device nodes (created in the container
/// and allowed in its device cgroup; once per path), mounts (after the container's own, parents
/// first), hooks and additional groups.
pub fn apply(spec: &mut Spec, edits: &[ContainerEdits]) -> Result<(), String> {
    let mut devices: Vec<(LinuxDevice, LinuxDeviceCgroup)> = Vec::new();
    let mut mounts: Vec<Mount> = Vec::new();
    for e in edits {
        for node in &e.device_nodes {
            if !devices
                .iter()
                .any(|(d, _)| d.path().as_os_str() == node.path.as_str())
            {
                devices.push(host_device(node)?);
            }
        }
        for m in &e.mounts {
            let typ = m.typ.clone().unwrap_or_else(|| "bind".into());
            mounts.push(
                MountBuilder::default()
                    .destination(&m.container_path)
                    .source(&m.host_path)
                    .typ(typ)
                    .options(m.options.clone())
                    .build()
                    .map_err(|e| format!("mount {}: {e}", m.container_path))?,
            );
        }
    }
    let process = spec
        .process_mut()
        .as_mut()
        .ok_or("the bundle has no process")?;
    let env = process.env_mut().get_or_insert_with(Vec::new);
    for var in edits.iter().flat_map(|e| &e.env) {
        if !KUMO_GPU_ENV.contains(&env_name(var)) {
            set_env(env, var.clone());
        }
    }
    let gids: Vec<u32> = edits
        .iter()
        .flat_map(|e| e.additional_gids.clone())
        .collect();
    if !gids.is_empty() {
        let user = process.user_mut();
        let all = user.additional_gids_mut().get_or_insert_with(Vec::new);
        for g in gids {
            if !all.contains(&g) {
                all.push(g);
            }
        }
    }
    // Parents before children, as the CDI library orders them; stable for equal depths.
    mounts.sort_by_key(|m| m.destination().components().count());
    spec.mounts_mut()
        .get_or_insert_with(Vec::new)
        .extend(mounts);
    let hooks = spec.hooks_mut().get_or_insert_with(Hooks::default);
    for h in edits.iter().flat_map(|e| &e.hooks) {
        let mut hook = HookBuilder::default().path(&h.path);
        if !h.args.is_empty() {
            hook = hook.args(h.args.clone());
        }
        if !h.env.is_empty() {
            hook = hook.env(h.env.clone());
        }
        if let Some(t) = h.timeout {
            hook = hook.timeout(t);
        }
        let hook = hook.build().map_err(|e| format!("hook {}: {e}", h.path))?;
        hook_list(hooks, &h.hook_name)?.push(hook);
    }
    if hooks == &Hooks::default() {
        *spec.hooks_mut() = None;
    }
    super::gpu_devices::add_linux_devices(spec, devices)
}

/// The spec directories to read: `configured`, or the CDI defaults.
pub fn spec_dirs(configured: &[PathBuf]) -> Vec<PathBuf> {
    if configured.is_empty() {
        DEFAULT_SPEC_DIRS.iter().map(PathBuf::from).collect()
    } else {
        configured.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(file: &str, text: &str) -> LoadedSpec {
        LoadedSpec {
            file: PathBuf::from(file),
            spec: parse(text, true).expect("valid spec"),
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong_and_where() {
        for (text, wanted) in [
            ("kind: nvidia.com/gpu\ncdiVersion: ''", "cdiVersion is empty"),
            ("kind: gpu\ncdiVersion: 0.6.0", "kind \"gpu\" is not vendor/class"),
            (
                "kind: a/b\ncdiVersion: 0.6.0\ndevices: [{name: ''}]",
                "devices[0].name is empty",
            ),
            (
                "kind: a/b\ncdiVersion: 0.6.0\ncontainerEdits: {env: [NOVALUE]}",
                "containerEdits.env[0]: \"NOVALUE\" is not NAME=VALUE",
            ),
            (
                "kind: a/b\ncdiVersion: 0.6.0\ndevices: [{name: '0', containerEdits: {deviceNodes: [{path: dev/x}]}}]",
                "devices[0].containerEdits.deviceNodes[0].path \"dev/x\" is not absolute",
            ),
            (
                "kind: a/b\ncdiVersion: 0.6.0\ncontainerEdits: {hooks: [{hookName: later, path: /bin/true}]}",
                "containerEdits.hooks[0].hookName: \"later\" is not an OCI hook",
            ),
            (
                "kind: a/b\ncdiVersion: 0.6.0\ncontainerEdits: {deviceNodes: [{path: /dev/x, type: z}]}",
                "containerEdits.deviceNodes[0].type: \"z\" is not one of c, u, b, p",
            ),
        ] {
            let err = parse(text, true).expect_err(text);
            assert!(err.starts_with(wanted), "{err} (wanted {wanted})");
        }
        assert!(parse("{\"kind\": 1}", false).is_err());
    }

    #[test]
    fn devices_resolve_by_index_then_uuid_and_later_specs_win() {
        let etc = loaded(
            "/etc/cdi/nvidia.yaml",
            "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ncontainerEdits: {env: [A=etc]}\ndevices:\n- {name: '0', containerEdits: {env: [D=0-etc]}}\n- {name: GPU-b, containerEdits: {env: [D=b]}}\n",
        );
        let run = loaded(
            "/var/run/cdi/nvidia.yaml",
            "cdiVersion: 0.6.0\nkind: nvidia.com/gpu\ncontainerEdits: {env: [A=run]}\ndevices: [{name: '0', containerEdits: {env: [D=0-run]}}]\n",
        );
        let other = loaded(
            "/etc/cdi/fpga.yaml",
            "cdiVersion: 0.6.0\nkind: example.com/fpga\ndevices: [{name: '1'}]\n",
        );
        let specs = [etc, other, run];
        let names = |i: &str, uuid: &str| vec![i.to_string(), uuid.to_string()];
        let r = resolve(&specs, &[names("0", "GPU-a"), names("1", "GPU-b")])
            .unwrap()
            .unwrap();
        let env: Vec<&str> = r
            .edits
            .iter()
            .flat_map(|e| &e.env)
            .map(String::as_str)
            .collect();
        // Each spec's own edits once, then each device's.
        assert_eq!(env, ["A=run", "A=etc", "D=0-run", "D=b"]);
        assert_eq!(
            r.files,
            [
                PathBuf::from("/var/run/cdi/nvidia.yaml"),
                PathBuf::from("/etc/cdi/nvidia.yaml")
            ]
        );
        let err = resolve(&specs, &[names("2", "GPU-c")]).unwrap_err();
        assert_eq!(
            err,
            "no CDI device nvidia.com/gpu=2 or GPU-c (/etc/cdi/nvidia.yaml has 0, GPU-b; /var/run/cdi/nvidia.yaml has 0)"
        );
        // No spec of the kind: the caller falls back to device nodes.
        assert_eq!(resolve(&specs[1..2], &[names("0", "GPU-a")]), Ok(None));
        assert_eq!(resolve(&specs, &[]), Ok(None));
    }

    #[test]
    fn edits_land_in_the_runtime_config() {
        let mut spec = Spec::default();
        let process = spec.process_mut().as_mut().unwrap();
        process.set_env(Some(vec![
            "PATH=/bin".into(),
            "LD_LIBRARY_PATH=/old".into(),
            "NVIDIA_VISIBLE_DEVICES=1".into(),
        ]));
        let edits = ContainerEdits {
            env: vec![
                "LD_LIBRARY_PATH=/usr/lib/nvidia".into(),
                "NVIDIA_VISIBLE_DEVICES=void".into(),
            ],
            device_nodes: vec![
                DeviceNode {
                    path: "/dev/nvidia1".into(),
                    typ: Some("c".into()),
                    major: Some(195),
                    minor: Some(1),
                    ..Default::default()
                },
                DeviceNode {
                    path: "/dev/nvidia1".into(),
                    host_path: Some("/nonexistent".into()),
                    ..Default::default()
                },
            ],
            mounts: vec![
                CdiMount {
                    host_path: "/usr/lib/x/libcuda.so.1".into(),
                    container_path: "/usr/lib/x/libcuda.so.1".into(),
                    options: vec!["ro".into(), "bind".into()],
                    typ: None,
                },
                CdiMount {
                    host_path: "/run/nvidia".into(),
                    container_path: "/run".into(),
                    options: vec![],
                    typ: Some("tmpfs".into()),
                },
            ],
            hooks: vec![CdiHook {
                hook_name: "createContainer".into(),
                path: "/usr/bin/nvidia-ctk".into(),
                args: vec!["nvidia-ctk".into(), "hook".into(), "update-ldcache".into()],
                ..Default::default()
            }],
            additional_gids: vec![44, 44],
        };
        apply(&mut spec, &[edits]).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(
            process.env().as_ref().unwrap(),
            &[
                "PATH=/bin",
                "NVIDIA_VISIBLE_DEVICES=1",
                "LD_LIBRARY_PATH=/usr/lib/nvidia"
            ]
        );
        assert_eq!(process.user().additional_gids().as_deref(), Some(&[44][..]));
        // Given numbers need no stat; the same path twice is one device.
        let linux = spec.linux().as_ref().unwrap();
        let devices = linux.devices().as_ref().unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!((devices[0].major(), devices[0].minor()), (195, 1));
        let rule = crate::oci::gpu_devices::tests::last_device_rule(&spec);
        assert_eq!(
            (rule.major(), rule.access().as_deref()),
            (Some(195), Some("rwm"))
        );
        // Parents first; a mount without a type is a bind mount.
        let mounts = spec.mounts().as_ref().unwrap();
        let added: Vec<(String, Option<String>)> = mounts[mounts.len() - 2..]
            .iter()
            .map(|m| (m.destination().display().to_string(), m.typ().clone()))
            .collect();
        assert_eq!(
            added,
            [
                ("/run".to_string(), Some("tmpfs".to_string())),
                (
                    "/usr/lib/x/libcuda.so.1".to_string(),
                    Some("bind".to_string())
                )
            ]
        );
        let hooks = spec.hooks().as_ref().unwrap();
        let hook = &hooks.create_container().as_ref().unwrap()[0];
        assert_eq!(hook.path(), &PathBuf::from("/usr/bin/nvidia-ctk"));
        assert!(hooks.prestart().is_none());
    }

    #[test]
    fn a_missing_device_node_is_an_error() {
        let mut spec = Spec::default();
        let edits = ContainerEdits {
            device_nodes: vec![DeviceNode {
                path: "/dev/nvidia9".into(),
                host_path: Some("/nonexistent/nvidia9".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = apply(&mut spec, &[edits]).unwrap_err();
        assert!(
            err.starts_with("device node /nonexistent/nvidia9: "),
            "{err}"
        );
    }
}
