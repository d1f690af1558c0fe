//! Images as the agent needs them, behind [`RootfsProvider`]: is an image here, pull it; and as
//! the runtime needs them, behind its [`RootfsMounter`]: make a fresh root filesystem of one for
//! a container run. The real store is kumo-image; [`DirImages`] serves plain directories
//! (tests, and nodes without a registry).

pub use kumo_runtime::rootfs::{ImageConfig, Rootfs, RootfsMounter};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The node's images.
#[async_trait::async_trait]
pub trait RootfsProvider: Send + Sync + 'static {
    /// Whether `image` is in the local store.
    async fn has_image(&self, image: &str) -> bool;

    /// Pulls `image` from its registry with `auth` (anonymous: the node's stored credentials,
    /// if any); the error is the registry's (or resolver's) own text.
    async fn pull(&self, image: &str, auth: &kumo_image::RegistryAuth) -> Result<(), String>;
}

/// Images that are directories already unpacked on the node, by reference. A "pull" of an
/// unknown image fails as a registry would. `mount` hands out the directory itself (runs of
/// the same image share it; the runtime can still make it read-only per container).
#[derive(Debug, Clone, Default)]
pub struct DirImages {
    images: BTreeMap<String, (PathBuf, ImageConfig)>,
}

impl DirImages {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `dir` as `reference` with `config`.
    pub fn with(mut self, reference: &str, dir: &Path, config: ImageConfig) -> Self {
        self.images
            .insert(reference.to_string(), (dir.to_path_buf(), config));
        self
    }
}

#[async_trait::async_trait]
impl RootfsProvider for DirImages {
    async fn has_image(&self, image: &str) -> bool {
        self.images.contains_key(image)
    }

    async fn pull(&self, image: &str, _auth: &kumo_image::RegistryAuth) -> Result<(), String> {
        if self.images.contains_key(image) {
            Ok(())
        } else {
            Err(format!(
                "failed to resolve reference {image:?}: {image}: not found"
            ))
        }
    }
}

#[async_trait::async_trait]
impl RootfsMounter for DirImages {
    async fn mount(&self, image: &str, _target: &Path) -> Result<Rootfs, String> {
        let (path, config) = self
            .images
            .get(image)
            .ok_or_else(|| format!("image {image:?} is not present"))?;
        Ok(Rootfs {
            path: path.clone(),
            config: config.clone(),
        })
    }

    async fn unmount(&self, _target: &Path) -> Result<(), String> {
        Ok(())
    }
}

/// kumo-image's store: pulls from registries, overlay root filesystems.
#[derive(Clone)]
pub struct StoreImages(pub kumo_image::ImageStore);

#[async_trait::async_trait]
impl RootfsProvider for StoreImages {
    async fn has_image(&self, image: &str) -> bool {
        self.0.get(image).is_some()
    }

    async fn pull(&self, image: &str, auth: &kumo_image::RegistryAuth) -> Result<(), String> {
        self.0
            .ensure(image, kumo_image::PullPolicy::Always, auth, &|_| {})
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl RootfsMounter for StoreImages {
    async fn mount(&self, image: &str, target: &Path) -> Result<Rootfs, String> {
        let stored = self
            .0
            .get(image)
            .ok_or_else(|| format!("image {image:?} is not in the store"))?;
        let (store, target) = (self.0.clone(), target.to_path_buf());
        let config = stored.config.clone();
        let rootfs = tokio::task::spawn_blocking(move || store.mount_rootfs(&stored, &target))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(Rootfs {
            path: rootfs.merged,
            config: ImageConfig {
                entrypoint: config.entrypoint,
                cmd: config.cmd,
                env: config.env,
                working_dir: config.working_dir,
                user: config.user,
            },
        })
    }

    async fn unmount(&self, target: &Path) -> Result<(), String> {
        if !target.exists() {
            return Ok(());
        }
        let (store, target) = (self.0.clone(), target.to_path_buf());
        tokio::task::spawn_blocking(move || store.unmount_rootfs(&target))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}
