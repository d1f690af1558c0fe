//! GPU use sampled by the agent for the devices a pod holds, carried on the pod as an annotation
//! and copied by the MLTask controller into each replica's status.

use serde::{Deserialize, Serialize};

/// Annotation the agent keeps on a pod holding GPUs: a JSON list of [`GpuUsage`], one per device.
pub use crate::keys::ANNOTATION_GPU_USAGE;

/// One device's use at the last sample.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuUsage {
    pub index: u32,
    pub uuid: String,
    /// Percent of the last sample period during which a kernel ran (NVML `utilization.gpu`).
    pub utilization_percent: u32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// Made up by `--fake-gpus`: not a measurement.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fake: bool,
}

/// The annotation's value for `samples`.
pub fn format(samples: &[GpuUsage]) -> String {
    // A list of plain structs always serialises.
    serde_json::to_string(samples).unwrap_or_default()
}

/// Reads the annotation back; `None` when it is not a list of samples.
pub fn parse(annotation: &str) -> Option<Vec<GpuUsage>> {
    serde_json::from_str(annotation).ok()
}

/// `0: 37%, 29.6/80.0 GiB (fake)` per device, joined with `; ` (`<none>` when empty).
pub fn summary(samples: &[GpuUsage]) -> String {
    if samples.is_empty() {
        return "<none>".into();
    }
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    samples
        .iter()
        .map(|s| {
            format!(
                "{}: {}%, {:.1}/{:.1} GiB{}",
                s.index,
                s.utilization_percent,
                gib(s.memory_used_bytes),
                gib(s.memory_total_bytes),
                if s.fake { " (fake)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_read_back_and_say_when_fake() {
        let s = vec![
            GpuUsage {
                index: 0,
                uuid: "fake-gpu-0".into(),
                utilization_percent: 37,
                memory_used_bytes: 30 << 30,
                memory_total_bytes: 80 << 30,
                fake: true,
            },
            GpuUsage {
                index: 1,
                uuid: "GPU-1".into(),
                utilization_percent: 5,
                memory_used_bytes: 1 << 29,
                memory_total_bytes: 80 << 30,
                fake: false,
            },
        ];
        let text = format(&s);
        assert!(text.contains(r#""utilizationPercent":37"#), "{text}");
        assert_eq!(parse(&text), Some(s.clone()));
        assert_eq!(parse("main=0"), None);
        assert_eq!(
            summary(&s),
            "0: 37%, 30.0/80.0 GiB (fake); 1: 5%, 0.5/80.0 GiB"
        );
        assert_eq!(summary(&[]), "<none>");
    }
}
