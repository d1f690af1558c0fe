//! Image garbage collection: when the disk holding the image store is fuller than the high
//! threshold, least-recently-used images that no pod on this node uses are removed until it is
//! back under the low threshold (as the kubelet's `--image-gc-high/low-threshold` do).

use kumo_api::Pod;
use kumo_client::Informer;
use std::path::PathBuf;
use std::time::Duration;

/// When to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    /// Disk usage (percent) above which images are collected.
    pub high_percent: u8,
    /// Disk usage (percent) collection brings it down to.
    pub low_percent: u8,
    pub interval: Duration,
    /// Images pulled, imported or used more recently than this are kept (an image imported for
    /// a pod about to be created must not go first).
    pub min_age: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            high_percent: 85,
            low_percent: 80,
            interval: Duration::from_secs(300),
            min_age: Duration::from_secs(120),
        }
    }
}

/// How many bytes must go for a disk of `total` bytes with `available` free to be at
/// `low_percent`, once it is above `high_percent`; `None` when it is not above.
pub fn bytes_to_free(total: u64, available: u64, policy: &GcPolicy) -> Option<u64> {
    if total == 0 {
        return None;
    }
    let used = total.saturating_sub(available) as u128;
    let total = total as u128;
    if used * 100 <= total * policy.high_percent as u128 {
        return None;
    }
    let goal = total * policy.low_percent.min(policy.high_percent) as u128 / 100;
    Some(used.saturating_sub(goal) as u64)
}

/// The digests of images used more recently than `min_age` before `now`.
pub fn recently_used(
    images: &[kumo_image::ImageSummary],
    now: std::time::SystemTime,
    min_age: Duration,
) -> Vec<String> {
    images
        .iter()
        .filter(|i| {
            now.duration_since(i.last_used)
                .map_or(true, |age| age < min_age)
        })
        .map(|i| i.digest.clone())
        .collect()
}

/// The images the pods on this node name.
pub fn images_in_use(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .flat_map(|p| p.spec.containers.iter())
        .filter_map(|c| c.image.clone())
        .collect()
}

/// Collects now if the disk is over the threshold; returns what was removed.
pub async fn collect_once(
    store: &kumo_image::ImageStore,
    dir: &std::path::Path,
    in_use: Vec<String>,
    policy: &GcPolicy,
) -> Result<Option<kumo_image::GcReport>, String> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(|e| format!("statvfs {dir:?}: {e}"))?;
    let block = stat.fragment_size() as u64;
    let total = stat.blocks() as u64 * block;
    let available = stat.blocks_available() as u64 * block;
    let Some(to_free) = bytes_to_free(total, available, policy) else {
        return Ok(None);
    };
    let store = store.clone();
    let mut in_use = in_use;
    in_use.extend(recently_used(
        &store.list(),
        std::time::SystemTime::now(),
        policy.min_age,
    ));
    tokio::task::spawn_blocking(move || {
        // With no limit the store only reports its size.
        let used = store
            .collect_garbage(u64::MAX, &[])
            .map_err(|e| e.to_string())?
            .used_before;
        store
            .collect_garbage(used.saturating_sub(to_free), &in_use)
            .map(Some)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Collects every `policy.interval` for as long as the agent runs.
pub async fn run(
    store: kumo_image::ImageStore,
    dir: PathBuf,
    pods: Informer<Pod>,
    policy: GcPolicy,
) {
    let mut tick = tokio::time::interval(policy.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match collect_once(&store, &dir, images_in_use(&pods.list()), &policy).await {
            Ok(Some(r)) if !r.removed.is_empty() => tracing::info!(
                removed = r.removed.len(),
                freed_bytes = r.freed_bytes,
                "image garbage collection: the disk was over {}%",
                policy.high_percent
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recently_used_images_are_kept() {
        let now = std::time::SystemTime::now();
        let image = |digest: &str, age: u64| kumo_image::ImageSummary {
            references: vec![],
            digest: digest.into(),
            size: 1,
            created: now - Duration::from_secs(age),
            last_used: now - Duration::from_secs(age),
        };
        let images = [image("sha256:new", 30), image("sha256:old", 600)];
        assert_eq!(
            recently_used(&images, now, Duration::from_secs(120)),
            vec!["sha256:new".to_string()]
        );
    }

    #[test]
    fn collects_only_above_high_and_down_to_low() {
        let p = GcPolicy {
            high_percent: 85,
            low_percent: 80,
            interval: Duration::from_secs(1),
            min_age: Duration::from_secs(1),
        };
        assert_eq!(bytes_to_free(1000, 200, &p), None, "80% used");
        assert_eq!(bytes_to_free(1000, 150, &p), None, "85% used");
        assert_eq!(
            bytes_to_free(1000, 100, &p),
            Some(100),
            "90% used, 80% wanted"
        );
        assert_eq!(bytes_to_free(0, 0, &p), None);
        let always = GcPolicy {
            high_percent: 0,
            low_percent: 0,
            ..p
        };
        assert_eq!(p.min_age, Duration::from_secs(1));
        assert_eq!(bytes_to_free(1000, 999, &always), Some(1));
    }
}
