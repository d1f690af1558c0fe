//! NVIDIA device nodes for a runc container that was given GPUs: `/dev/nvidiaN` for exactly its
//! devices plus the driver's control nodes, created in the container and allowed in its device
//! cgroup. Only nodes present on the host are added, so with fake GPUs nothing changes. (Driver
//! libraries are the image's business here; a CDI spec would bring them, not done yet.)

use crate::gpus::{gpus_wanted, NVIDIA_VISIBLE_DEVICES};
use kumo_api::pod::Container;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceType, Spec,
};
use std::path::Path;

/// Nodes every GPU container needs besides its own `/dev/nvidiaN`.
const CONTROL_NODES: [&str; 4] = [
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
];

/// A character device on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: String,
    pub major: i64,
    pub minor: i64,
}

/// The device indices the agent gave the container (`NVIDIA_VISIBLE_DEVICES`, its last value,
/// which the agent appends to a container that asks for GPUs). A container that asks for none
/// gets none, whatever its own environment says: devices are handed out only by allocation.
pub fn visible_devices(c: &Container) -> Vec<u32> {
    if gpus_wanted(c) == 0 {
        return Vec::new();
    }
    c.env
        .iter()
        .rev()
        .find(|e| e.name == NVIDIA_VISIBLE_DEVICES)
        .map(|e| e.value.split(',').filter_map(|i| i.parse().ok()).collect())
        .unwrap_or_default()
}

/// The paths a container with `devices` needs: its own nodes, then the control nodes.
pub fn wanted_paths(devices: &[u32]) -> Vec<String> {
    if devices.is_empty() {
        return Vec::new();
    }
    devices
        .iter()
        .map(|i| format!("/dev/nvidia{i}"))
        .chain(CONTROL_NODES.iter().map(|s| s.to_string()))
        .collect()
}

/// Linux's encoding of a device number (glibc's `gnu_dev_major`/`gnu_dev_minor`).
pub fn split_rdev(rdev: u64) -> (i64, i64) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000);
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00);
    (major as i64, minor as i64)
}

/// Those of `paths` that are character devices on this host.
pub fn host_nodes(paths: &[String]) -> Vec<DeviceNode> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    paths
        .iter()
        .filter_map(|p| {
            let meta = std::fs::metadata(Path::new(p)).ok()?;
            meta.file_type().is_char_device().then(|| {
                let (major, minor) = split_rdev(meta.rdev());
                DeviceNode {
                    path: p.clone(),
                    major,
                    minor,
                }
            })
        })
        .collect()
}

/// Adds `nodes` to the container's devices and allows them in its device cgroup.
pub fn add_devices(spec: &mut Spec, nodes: &[DeviceNode]) -> Result<(), String> {
    let devices = nodes
        .iter()
        .map(|n| {
            let dev = LinuxDeviceBuilder::default()
                .path(n.path.clone())
                .typ(LinuxDeviceType::C)
                .major(n.major)
                .minor(n.minor)
                .file_mode(0o666u32)
                .build()
                .map_err(|e| format!("device {}: {e}", n.path))?;
            let rule = LinuxDeviceCgroup::from(&dev);
            Ok((dev, rule))
        })
        .collect::<Result<Vec<_>, String>>()?;
    add_linux_devices(spec, devices)
}

/// Adds devices (each with its device cgroup rule) the container does not have yet by path.
pub fn add_linux_devices(
    spec: &mut Spec,
    devices: Vec<(LinuxDevice, LinuxDeviceCgroup)>,
) -> Result<(), String> {
    if devices.is_empty() {
        return Ok(());
    }
    let linux = spec
        .linux_mut()
        .as_mut()
        .ok_or("the bundle has no linux section")?;
    let have = linux.devices_mut().get_or_insert_with(Vec::new);
    let mut rules = Vec::new();
    for (dev, rule) in devices {
        if !have.iter().any(|d| d.path() == dev.path()) {
            have.push(dev);
            rules.push(rule);
        }
    }
    if let Some(resources) = linux.resources_mut().as_mut() {
        resources
            .devices_mut()
            .get_or_insert_with(Vec::new)
            .extend(rules);
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use kumo_api::pod::EnvVar;

    #[test]
    fn only_the_containers_own_devices_and_the_control_nodes() {
        let mut c = Container {
            env: vec![
                EnvVar {
                    name: "NVIDIA_VISIBLE_DEVICES".into(),
                    value: "9".into(),
                },
                EnvVar {
                    name: "NVIDIA_VISIBLE_DEVICES".into(),
                    value: "1,3".into(),
                },
            ],
            ..Default::default()
        };
        // Without a GPU request its own NVIDIA_VISIBLE_DEVICES gives it nothing.
        assert_eq!(visible_devices(&c), Vec::<u32>::new());
        c.resources =
            serde_json::from_value(serde_json::json!({"limits": {"nvidia.com/gpu": "2"}})).unwrap();
        assert_eq!(visible_devices(&c), [1, 3]);
        assert_eq!(
            wanted_paths(&[1, 3]),
            [
                "/dev/nvidia1",
                "/dev/nvidia3",
                "/dev/nvidiactl",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools",
                "/dev/nvidia-modeset"
            ]
        );
        assert!(wanted_paths(&[]).is_empty());
        assert_eq!(visible_devices(&Container::default()), Vec::<u32>::new());
    }

    /// The last device cgroup rule of the bundle (the one a test just added).
    pub(in crate::oci) fn last_device_rule(spec: &Spec) -> &LinuxDeviceCgroup {
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        let rules = resources
            .and_then(|r| r.devices().as_ref())
            .expect("device rules");
        rules.last().expect("a device rule")
    }

    #[test]
    fn device_numbers_and_the_bundle() {
        // /dev/nvidia0 is 195:0, /dev/null 1:3; large numbers use the high bits.
        assert_eq!(split_rdev(195 << 8), (195, 0));
        assert_eq!(split_rdev((1 << 8) | 3), (1, 3));
        let makedev = |major: u64, minor: u64| {
            ((major & 0xffff_f000) << 32)
                | ((major & 0xfff) << 8)
                | ((minor & 0xffff_ff00) << 12)
                | (minor & 0xff)
        };
        for (major, minor) in [(195, 255), (4096, 0x1234), (511, 1 << 20)] {
            assert_eq!(
                split_rdev(makedev(major, minor)),
                (major as i64, minor as i64)
            );
        }
        // A real character device of this host stands in for a GPU.
        let nodes = host_nodes(&["/dev/null".to_string(), "/nonexistent".to_string()]);
        assert_eq!(
            nodes,
            [DeviceNode {
                path: "/dev/null".into(),
                major: 1,
                minor: 3
            }]
        );
        let mut spec = Spec::default();
        add_devices(&mut spec, &nodes).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let dev = &linux.devices().as_ref().unwrap()[0];
        assert_eq!((dev.major(), dev.minor()), (1, 3));
        let rule = last_device_rule(&spec);
        assert!(rule.allow());
        assert_eq!((rule.major(), rule.minor()), (Some(1), Some(3)));
        assert_eq!(rule.access().as_deref(), Some("rwm"));
    }
}
