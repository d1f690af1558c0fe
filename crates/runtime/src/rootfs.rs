//! Root filesystems as the runtime needs them: a fresh one made of an image for each container
//! run, and undone after. Which images a node has and how they are pulled is the agent's.

use std::path::{Path, PathBuf};

/// The parts of an OCI image config a container run uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries, in the image's order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid`, `name` or `name:group`.
    pub user: Option<String>,
}

/// A root filesystem made for one container run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    pub path: PathBuf,
    pub config: ImageConfig,
}

/// Makes and removes containers' root filesystems.
#[async_trait::async_trait]
pub trait RootfsMounter: Send + Sync + 'static {
    /// Makes a fresh, writable root filesystem of `image` at `target` (an empty directory the
    /// caller owns) and returns where it is with the image's config.
    async fn mount(&self, image: &str, target: &Path) -> Result<Rootfs, String>;

    /// Undoes [`RootfsMounter::mount`] of `target`; nothing mounted is no error.
    async fn unmount(&self, target: &Path) -> Result<(), String>;
}
