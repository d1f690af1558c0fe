//! `ImageStore`: the public face of the crate — ensure, get, list, remove, import, mount, GC.

use crate::blobs::{mkdirs, Blobs};
use crate::digest::Digest;
use crate::error::{invalid, ImageError};
use crate::manifest::{self, Manifest};
use crate::meta::{now, Meta, MetaFile, Record};
use crate::policy::PullPolicy;
use crate::reference::ImageRef;
use crate::registries::{Registries, RegistryAuth};
use crate::unpack::unpack_layer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How stale an image's recorded last use may get before a use writes it again.
const TOUCH_EVERY_MS: u64 = 60_000;
/// The defaults an image gives its containers (a pod's `command`/`args` override
/// `entrypoint`/`cmd` as in Kubernetes).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// `Entrypoint`; empty when unset.
    pub entrypoint: Vec<String>,
    /// `Cmd`; empty when unset.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WorkingDir`, when set and not empty.
    pub working_dir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid`, ...), when set and not empty.
    pub user: Option<String>,
    /// `ExposedPorts` keys (`80/tcp`).
    pub exposed_ports: Vec<String>,
}

/// A stored image, ready to be mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The canonical reference it was asked for (or its manifest digest when it has no name).
    pub reference: String,
    /// The manifest digest (`sha256:...`), the image's identity.
    pub digest: String,
    pub config: ImageConfig,
    /// Unpacked layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// Bytes on disk (blobs and unpacked layers).
    pub size: u64,
}

/// One line of `kumo image ls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    pub references: Vec<String>,
    pub digest: String,
    pub size: u64,
    pub created: SystemTime,
    pub last_used: SystemTime,
}

/// A mounted container root file system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rootfs {
    /// The overlay mount point: the container's `/` (`<container_dir>/merged`).
    pub merged: PathBuf,
    /// The container dir holding `upper/`, `work/` and `merged/`.
    pub container_dir: PathBuf,
}

/// What [`ImageStore::collect_garbage`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Manifest digests of the removed images, least recently used first.
    pub removed: Vec<String>,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Bytes used by the store before and after.
    pub used_before: u64,
    pub used_after: u64,
}

/// Where one layer of a pull stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPhase {
    /// Bytes are arriving: `bytes` of `total`.
    Downloading,
    /// Downloaded and verified; unpacking.
    Unpacking,
    /// Unpacked and ready.
    Done,
    /// Already in the store: nothing to download.
    Cached,
}

/// A progress report for one layer (given to the `progress` callback of
/// [`ImageStore::ensure`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullProgress {
    /// The layer's (compressed) digest.
    pub digest: String,
    /// Index of the layer, bottom first, and the number of layers.
    pub layer: usize,
    pub layers: usize,
    pub phase: PullPhase,
    /// Bytes downloaded so far and the layer's size.
    pub bytes: u64,
    pub total: u64,
}

/// The node's image store. Cheap to clone; safe to share between threads and with other
/// processes using the same directory (writes of the index are serialised by a file lock).
#[derive(Clone, Debug)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    blobs: Blobs,
    meta: MetaFile,
    registries: Registries,
}

impl ImageStore {
    /// Opens (creating if needed) a store in `dir`, with the default registry rules (plain HTTP
    /// for loopback only) and no stored credentials.
    pub fn open(dir: &Path) -> Result<ImageStore, ImageError> {
        ImageStore::open_with(dir, Registries::new())
    }

    /// Opens a store that reaches registries by these rules and credentials.
    pub fn open_with(dir: &Path, registries: Registries) -> Result<ImageStore, ImageError> {
        let dir = std::path::absolute(dir)
            .map_err(crate::error::io_err(format!("resolving {}", dir.display())))?;
        for sub in ["blobs/sha256", "mounts"] {
            mkdirs(&dir.join(sub))?;
        }
        // Layers keep their setuid files and device nodes: only root may reach them, where
        // they lie (layers/) and while they are unpacked or deleted (tmp/). Also fixes a store
        // made by an older kumo.
        for sub in ["layers", "tmp"] {
            crate::private::private_dir(&dir.join(sub))?;
        }
        Ok(ImageStore {
            inner: Arc::new(Inner {
                blobs: Blobs::new(dir.join("blobs/sha256"), dir.join("tmp")),
                meta: MetaFile {
                    path: dir.join("index.json"),
                    lock_path: dir.join("lock"),
                    tmp: dir.join("tmp"),
                },
                registries,
                dir,
            }),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Makes sure the image is in the store, pulling it as `policy` says, and returns it.
    ///
    /// `auth` is used for the image's registry; with [`RegistryAuth::Anonymous`] the stored
    /// credentials for that registry, if any, are used. `progress` is called for each layer as
    /// bytes arrive. Errors from the registry carry its own text ([`ImageError::Registry`]).
    pub async fn ensure(
        &self,
        reference: &str,
        policy: PullPolicy,
        auth: &RegistryAuth,
        progress: &(dyn Fn(PullProgress) + Send + Sync),
    ) -> Result<Image, ImageError> {
        let parsed = ImageRef::parse(reference)?;
        match policy {
            PullPolicy::Never => {
                return self
                    .use_existing(reference)
                    .ok_or_else(|| ImageError::NeverPull(parsed.name()))
            }
            PullPolicy::IfNotPresent => {
                if let Some(image) = self.use_existing(reference) {
                    return Ok(image);
                }
            }
            PullPolicy::Always => {}
        }
        crate::pull::pull(self, &parsed, auth, progress).await
    }

    /// The stored image with this reference (`busybox:1.36`, a canonical name, or a manifest
    /// digest `sha256:...`), if any. Does not count as a use.
    pub fn get(&self, reference: &str) -> Option<Image> {
        let meta = self.inner.meta.read().ok()?;
        let (digest, record) = find(&meta, reference)?;
        Some(self.image(digest, record, reference))
    }

    /// All stored images, by first reference.
    pub fn list(&self) -> Vec<ImageSummary> {
        let Ok(meta) = self.inner.meta.read() else {
            return Vec::new();
        };
        let mut out: Vec<ImageSummary> = meta
            .images
            .iter()
            .map(|(digest, r)| ImageSummary {
                references: r.references.clone(),
                digest: digest.clone(),
                size: r.size,
                created: UNIX_EPOCH + Duration::from_millis(r.created),
                last_used: UNIX_EPOCH + Duration::from_millis(r.last_used),
            })
            .collect();
        out.sort_by(|a, b| {
            (a.references.first(), &a.digest).cmp(&(b.references.first(), &b.digest))
        });
        out
    }

    /// Removes a reference. When it was the image's last one (or `reference` is its digest),
    /// the image goes too, with the blobs and layers no other image uses. Refused while a
    /// mounted rootfs uses the image.
    pub fn remove(&self, reference: &str) -> Result<(), ImageError> {
        let m = &self.inner.meta;
        let lock = m.lock()?;
        let mut meta = m.read()?;
        let (digest, record) = find(&meta, reference)
            .map(|(d, r)| (d.to_string(), r.clone()))
            .ok_or_else(|| ImageError::NotFound(reference.to_string()))?;
        let name = ImageRef::parse(reference).ok().map(|r| r.name());
        let untag_only = name
            .as_ref()
            .is_some_and(|n| record.references.len() > 1 && record.references.contains(n));
        if untag_only {
            if let Some(rec) = meta.images.get_mut(&digest) {
                rec.references.retain(|r| Some(r) != name.as_ref());
            }
            return m.write(&lock, &meta);
        }
        if let Some(user) = crate::mount::users(self.dir())?
            .into_iter()
            .find(|u| u.digest == digest)
        {
            return Err(ImageError::InUse {
                reference: reference.to_string(),
                container_dir: user.container_dir,
            });
        }
        meta.images.remove(&digest);
        let doomed = self.unreferenced(&meta, &record);
        for l in &doomed.1 {
            meta.layers.remove(l);
        }
        m.write(&lock, &meta)?;
        self.delete(doomed)?;
        Ok(())
    }

    /// Imports an OCI layout directory, an OCI archive (a tar of a layout) or a `docker save`
    /// archive. `reference` names the image (the archive must then hold one); otherwise names
    /// come from the archive (`io.containerd.image.name` or a full `org.opencontainers.image.
    /// ref.name` annotation, `RepoTags`), and an unnamed image is known by its digest.
    pub fn import(&self, path: &Path, reference: Option<&str>) -> Result<Vec<Image>, ImageError> {
        crate::import::import(self, path, reference)
    }

    /// Mounts the image as an overlay at `<container_dir>/merged`, with `upper/` and `work/` in
    /// `container_dir` (created if needed). Mounting an already-mounted dir returns it as is
    /// (an agent re-adopting its containers).
    pub fn mount_rootfs(&self, image: &Image, container_dir: &Path) -> Result<Rootfs, ImageError> {
        crate::mount::mount(self, image, container_dir)
    }

    /// Unmounts `<container_dir>/merged` and forgets the mount; nothing mounted is fine.
    /// `upper/` and `work/` stay for the caller to delete with the container dir.
    pub fn unmount_rootfs(&self, container_dir: &Path) -> Result<(), ImageError> {
        crate::mount::unmount(self, container_dir)
    }

    /// When the store uses more than `high_water_bytes`, removes least-recently-used images
    /// until it does not, skipping those named in `in_use` (references or digests) and those
    /// with a mounted rootfs.
    pub fn collect_garbage(
        &self,
        high_water_bytes: u64,
        in_use: &[String],
    ) -> Result<GcReport, ImageError> {
        crate::gc::collect(self, high_water_bytes, in_use)
    }

    // ---- crate-internal helpers ----

    pub(crate) fn registries(&self) -> &Registries {
        &self.inner.registries
    }

    pub(crate) fn blobs(&self) -> &Blobs {
        &self.inner.blobs
    }

    pub(crate) fn meta(&self) -> &MetaFile {
        &self.inner.meta
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.inner.dir.join("tmp")
    }

    pub(crate) fn layer_dir(&self, diff_id: &str) -> PathBuf {
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        self.inner.dir.join("layers").join(hex)
    }

    pub(crate) fn image(&self, digest: &str, record: &Record, asked: &str) -> Image {
        let reference = ImageRef::parse(asked)
            .ok()
            .map(|r| r.name())
            .filter(|n| record.references.contains(n))
            .or_else(|| record.references.first().cloned())
            .unwrap_or_else(|| digest.to_string());
        Image {
            reference,
            digest: digest.to_string(),
            config: record.config.clone(),
            layers: record.layers.iter().map(|l| self.layer_dir(l)).collect(),
            size: record.size,
        }
    }

    /// The stored image, with its last use set to now.
    fn use_existing(&self, reference: &str) -> Option<Image> {
        let image = self.get(reference)?;
        if !image.layers.iter().all(|l| l.is_dir()) {
            return None;
        }
        let _ = self.touch(&image.digest);
        Some(image)
    }

    /// Sets the image's last use to now, unless it was set less than [`TOUCH_EVERY_MS`] ago:
    /// last use only orders image GC (whose minimum age is minutes), and each write is an
    /// fsynced rewrite of the whole index, on the path of every container start.
    pub(crate) fn touch(&self, digest: &str) -> Result<(), ImageError> {
        let recent = |meta: &crate::meta::Meta| {
            meta.images
                .get(digest)
                .is_some_and(|r| now().saturating_sub(r.last_used) < TOUCH_EVERY_MS)
        };
        if recent(&self.meta().read()?) {
            return Ok(());
        }
        self.meta().update(|meta| {
            if let Some(r) = meta.images.get_mut(digest) {
                r.last_used = now();
            }
            Ok(())
        })
    }

    /// Records an image whose manifest, config and layer blobs are in the store, unpacking
    /// any layer not unpacked yet, and gives it `names` (taken from any other image).
    pub(crate) fn install(
        &self,
        manifest_digest: &Digest,
        manifest: &Manifest,
        extra_blobs: &[Digest],
        names: &[String],
    ) -> Result<Image, ImageError> {
        let config_digest = manifest.config.digest()?;
        let (config, diff_ids) = manifest::parse_config(&self.blobs().read(&config_digest)?)?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(invalid(
                "image",
                format!(
                    "the manifest lists {} layers but the config {} diff ids",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut sizes = Vec::new();
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            let dest = self.layer_dir(diff_id.as_str());
            if dest.is_dir() {
                continue;
            }
            let blob = self.blobs().path(&layer.digest()?);
            let u = unpack_layer(&blob, &dest, &self.tmp(), Some(diff_id))?;
            sizes.push((diff_id.to_string(), u.size));
        }
        let mut blobs: Vec<Digest> = extra_blobs.to_vec();
        blobs.push(manifest_digest.clone());
        blobs.push(config_digest);
        for l in &manifest.layers {
            blobs.push(l.digest()?);
        }
        let key = manifest_digest.to_string();
        let record = self.meta().update(|meta| {
            for (d, s) in &sizes {
                meta.layers.insert(d.clone(), *s);
            }
            // A concurrent remove may have taken a layer or blob we found present: fail then,
            // rather than record an image that cannot be mounted.
            for d in &diff_ids {
                if !self.layer_dir(d.as_str()).is_dir() {
                    return Err(invalid(
                        "image",
                        format!("layer {d} vanished during the pull; retry"),
                    ));
                }
            }
            let blob_size: u64 = blobs.iter().map(|b| self.blobs().size(b)).sum();
            let layer_size: u64 = diff_ids
                .iter()
                .map(|d| meta.layers.get(d.as_str()).copied().unwrap_or(0))
                .sum();
            for (digest, r) in meta.images.iter_mut() {
                if digest != &key {
                    r.references.retain(|n| !names.contains(n));
                }
            }
            let t = now();
            let entry = meta.images.entry(key.clone()).or_insert_with(|| Record {
                references: Vec::new(),
                config: config.clone(),
                layers: diff_ids.iter().map(|d| d.to_string()).collect(),
                blobs: Vec::new(),
                size: 0,
                created: t,
                last_used: t,
            });
            for b in &blobs {
                if !entry.blobs.contains(&b.to_string()) {
                    entry.blobs.push(b.to_string());
                }
            }
            for n in names {
                if !entry.references.contains(n) {
                    entry.references.push(n.clone());
                }
            }
            entry.size = blob_size + layer_size;
            entry.last_used = t;
            Ok(entry.clone())
        })?;
        let asked = names.first().cloned().unwrap_or_else(|| key.clone());
        Ok(self.image(&key, &record, &asked))
    }

    /// The blobs and layers of `removed` that no image left in `meta` uses.
    pub(crate) fn unreferenced(&self, meta: &Meta, removed: &Record) -> (Vec<String>, Vec<String>) {
        let used = |f: &dyn Fn(&Record) -> bool| meta.images.values().any(f);
        let blobs = removed
            .blobs
            .iter()
            .filter(|b| !used(&|r| r.blobs.contains(b)))
            .cloned()
            .collect();
        let layers = removed
            .layers
            .iter()
            .filter(|l| !used(&|r| r.layers.contains(l)))
            .cloned()
            .collect();
        (blobs, layers)
    }

    /// Bytes of these blobs and layers (layers as recorded in `meta`).
    pub(crate) fn bytes_of(&self, meta: &Meta, doomed: &(Vec<String>, Vec<String>)) -> u64 {
        let blobs: u64 = doomed
            .0
            .iter()
            .filter_map(|b| Digest::parse(b).ok())
            .map(|b| self.blobs().size(&b))
            .sum();
        let layers: u64 = doomed.1.iter().filter_map(|l| meta.layers.get(l)).sum();
        blobs + layers
    }

    /// Deletes blobs and layer dirs (a layer is first renamed into tmp/, so it vanishes at once).
    pub(crate) fn delete(&self, doomed: (Vec<String>, Vec<String>)) -> Result<(), ImageError> {
        for b in doomed.0 {
            if let Ok(d) = Digest::parse(&b) {
                self.blobs().remove(&d)?;
            }
        }
        for l in doomed.1 {
            let dir = self.layer_dir(&l);
            if !dir.exists() {
                continue;
            }
            let trash = self.tmp().join(format!(
                "trash-{}-{}",
                dir.file_name().and_then(|n| n.to_str()).unwrap_or("layer"),
                std::process::id()
            ));
            std::fs::rename(&dir, &trash)
                .and_then(|_| std::fs::remove_dir_all(&trash))
                .map_err(crate::error::io_err(format!("removing layer {l}")))?;
        }
        Ok(())
    }
}

/// Finds an image by manifest digest, by `name@digest`, or by reference.
pub(crate) fn find<'a>(meta: &'a Meta, reference: &str) -> Option<(&'a str, &'a Record)> {
    if Digest::parse(reference).is_ok() {
        return meta
            .images
            .get_key_value(reference)
            .map(|(k, v)| (k.as_str(), v));
    }
    let parsed = ImageRef::parse(reference).ok()?;
    let name = parsed.name();
    if let Some(hit) = meta
        .images
        .iter()
        .find(|(_, r)| r.references.contains(&name))
    {
        return Some((hit.0.as_str(), hit.1));
    }
    let pinned = parsed.digest()?;
    meta.images
        .get_key_value(pinned)
        .map(|(k, v)| (k.as_str(), v))
}
