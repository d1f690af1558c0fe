//! Garbage collection: least-recently-used images go when the store is over its high water.

use crate::digest::Digest;
use crate::error::{io_err, ImageError};
use crate::meta::Meta;
use crate::store::{find, GcReport, ImageStore};
use std::collections::BTreeSet;

/// See [`ImageStore::collect_garbage`].
pub(crate) fn collect(
    store: &ImageStore,
    high_water: u64,
    in_use: &[String],
) -> Result<GcReport, ImageError> {
    let m = store.meta();
    let lock = m.lock()?;
    let mut meta = m.read()?;
    let used_before = usage(store, &meta)?;
    let mut report = GcReport {
        used_before,
        used_after: used_before,
        ..GcReport::default()
    };
    if used_before <= high_water {
        return Ok(report);
    }
    let mut protected: BTreeSet<String> = in_use
        .iter()
        .filter_map(|r| find(&meta, r).map(|(d, _)| d.to_string()))
        .collect();
    protected.extend(
        crate::mount::users(store.dir())?
            .into_iter()
            .map(|u| u.digest),
    );
    let mut candidates: Vec<(u64, String)> = meta
        .images
        .iter()
        .filter(|(d, _)| !protected.contains(*d))
        .map(|(d, r)| (r.last_used, d.clone()))
        .collect();
    candidates.sort();
    let mut used = used_before;
    let mut doomed = (Vec::new(), Vec::new());
    for (_, digest) in candidates {
        if used <= high_water {
            break;
        }
        let Some(record) = meta.images.remove(&digest) else {
            continue;
        };
        let gone = store.unreferenced(&meta, &record);
        let freed = store.bytes_of(&meta, &gone);
        for l in &gone.1 {
            meta.layers.remove(l);
        }
        used = used.saturating_sub(freed);
        report.freed_bytes += freed;
        report.removed.push(digest);
        doomed.0.extend(gone.0);
        doomed.1.extend(gone.1);
    }
    m.write(&lock, &meta)?;
    store.delete(doomed)?;
    report.used_after = usage(store, &meta)?;
    Ok(report)
}

/// Bytes used: every blob file plus every recorded layer.
fn usage(store: &ImageStore, meta: &Meta) -> Result<u64, ImageError> {
    let dir = store.dir().join("blobs/sha256");
    let entries = std::fs::read_dir(&dir).map_err(io_err(format!("reading {}", dir.display())))?;
    let blobs: u64 = entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let layers: u64 = meta
        .layers
        .keys()
        .filter(|l| Digest::parse(l).is_ok())
        .filter(|l| store.layer_dir(l).is_dir())
        .filter_map(|l| meta.layers.get(l))
        .sum();
    Ok(blobs + layers)
}
