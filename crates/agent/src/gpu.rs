//! GPU discovery behind a trait: NVML on real machines, made-up devices for `--fake-gpus`.

use kumo_api::node::GpuDevice;
use nvml_wrapper::Nvml;

/// Finds the node's GPUs.
pub trait GpuDiscovery: Send + Sync {
    fn discover(&self) -> Vec<GpuDevice>;
    /// Whether the devices are made up (shown on the node so nobody mistakes them for real).
    fn is_fake(&self) -> bool {
        false
    }
}

/// NVIDIA GPUs through NVML (the library is loaded at run time; without it there are no GPUs).
pub struct NvmlGpus {
    nvml: Option<Nvml>,
}

impl NvmlGpus {
    pub fn new() -> Self {
        let nvml = match Nvml::init() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!(error = %e, "no NVML; this node reports no GPUs");
                None
            }
        };
        NvmlGpus { nvml }
    }
}

impl Default for NvmlGpus {
    fn default() -> Self {
        Self::new()
    }
}

impl GpuDiscovery for NvmlGpus {
    fn discover(&self) -> Vec<GpuDevice> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = match nvml.device_count() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "NVML cannot count devices");
                return Vec::new();
            }
        };
        (0..count)
            .map(|index| {
                let mut gpu = GpuDevice {
                    index,
                    uuid: format!("unknown-gpu-{index}"),
                    model: "unknown".into(),
                    memory_bytes: 0,
                    healthy: false,
                    fake: false,
                };
                // A device whose queries fail is reported, but unhealthy.
                let Ok(dev) = nvml.device_by_index(index) else {
                    return gpu;
                };
                let (uuid, name, mem) = (dev.uuid(), dev.name(), dev.memory_info());
                gpu.healthy = uuid.is_ok() && name.is_ok() && mem.is_ok();
                if let Ok(u) = uuid {
                    gpu.uuid = u;
                }
                if let Ok(n) = name {
                    gpu.model = n;
                }
                if let Ok(m) = mem {
                    gpu.memory_bytes = m.total;
                }
                gpu
            })
            .collect()
    }
}

/// `n` made-up GPUs (`fake-gpu-<i>`, model `FakeGPU`, 80 GiB), for testing GPU scheduling.
pub struct FakeGpus(pub u32);

/// The model name of fake GPUs.
pub const FAKE_GPU_MODEL: &str = "FakeGPU";

impl GpuDiscovery for FakeGpus {
    fn discover(&self) -> Vec<GpuDevice> {
        (0..self.0)
            .map(|index| GpuDevice {
                index,
                uuid: format!("fake-gpu-{index}"),
                model: FAKE_GPU_MODEL.into(),
                memory_bytes: 80 << 30,
                healthy: true,
                fake: true,
            })
            .collect()
    }

    fn is_fake(&self) -> bool {
        true
    }
}

/// A GPU model name as a label value (`NVIDIA H100 80GB HBM3` → `NVIDIA-H100-80GB-HBM3`).
pub fn model_label(model: &str) -> String {
    let mapped: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::new();
    for c in mapped.chars() {
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let trimmed: String = out
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(63)
        .collect();
    trimmed
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_gpus_say_so() {
        let gpus = FakeGpus(2).discover();
        assert_eq!(gpus.len(), 2);
        assert_eq!(
            gpus[1],
            GpuDevice {
                index: 1,
                uuid: "fake-gpu-1".into(),
                model: "FakeGPU".into(),
                memory_bytes: 80 * 1024 * 1024 * 1024,
                healthy: true,
                fake: true
            }
        );
        assert!(FakeGpus(1).is_fake());
    }

    #[test]
    fn model_names_become_label_values() {
        for (model, label) in [
            ("NVIDIA H100 80GB HBM3", "NVIDIA-H100-80GB-HBM3"),
            ("FakeGPU", "FakeGPU"),
            ("  Tesla  V100 (SXM2) ", "Tesla-V100-SXM2"),
            ("", ""),
        ] {
            assert_eq!(model_label(model), label);
        }
        assert_eq!(model_label(&"x".repeat(100)).len(), 63);
    }
}
