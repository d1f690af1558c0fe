//! GPU discovery behind a trait: NVML on real machines, made-up devices for `--fake-gpus`.

use kumo_api::gpu_usage::GpuUsage;
use kumo_api::node::GpuDevice;
use kumo_runtime::gpus::GpuDevices;
use nvml_wrapper::Nvml;
use std::sync::Arc;

/// Finds the node's GPUs.
pub trait GpuDiscovery: Send + Sync {
    fn discover(&self) -> Vec<GpuDevice>;
    /// Whether the devices are made up (shown on the node so nobody mistakes them for real).
    fn is_fake(&self) -> bool {
        false
    }
    /// The device's use now; `None` when it cannot be read.
    fn sample(&self, _index: u32) -> Option<GpuUsage> {
        None
    }
}

/// The node's discovery as the runtime sees it (the devices to give containers).
pub struct RuntimeGpus(pub Arc<dyn GpuDiscovery>);

impl GpuDevices for RuntimeGpus {
    fn discover(&self) -> Vec<GpuDevice> {
        self.0.discover()
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

    fn sample(&self, index: u32) -> Option<GpuUsage> {
        let dev = self.nvml.as_ref()?.device_by_index(index).ok()?;
        let (util, mem) = (dev.utilization_rates().ok()?, dev.memory_info().ok()?);
        Some(GpuUsage {
            index,
            uuid: dev
                .uuid()
                .unwrap_or_else(|_| format!("unknown-gpu-{index}")),
            utilization_percent: util.gpu,
            memory_used_bytes: mem.used,
            memory_total_bytes: mem.total,
            fake: false,
        })
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

    /// A made-up sample that depends only on the index (so it never changes and is written
    /// once), marked fake so nobody reads it as a measurement.
    fn sample(&self, index: u32) -> Option<GpuUsage> {
        (index < self.0).then(|| {
            let total: u64 = 80 << 30;
            let percent = (index * 37 + 42) % 100;
            GpuUsage {
                index,
                uuid: format!("fake-gpu-{index}"),
                utilization_percent: percent,
                memory_used_bytes: total / 100 * u64::from(percent),
                memory_total_bytes: total,
                fake: true,
            }
        })
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
    fn fake_samples_are_fixed_and_marked_fake() {
        let gpus = FakeGpus(2);
        let s = gpus.sample(1).unwrap();
        assert_eq!(
            (s.uuid.as_str(), s.utilization_percent, s.fake),
            ("fake-gpu-1", 79, true)
        );
        assert_eq!(s.memory_used_bytes, (80u64 << 30) / 100 * 79);
        assert_eq!(gpus.sample(1), Some(s));
        assert_eq!(gpus.sample(2), None);
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
