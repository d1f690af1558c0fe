//! kumo-image: the node's image store — pulls OCI images, verifies and unpacks them, and mounts
//! container root filesystems through overlayfs.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), kumo_image::ImageError> {
//! use kumo_image::{ImageStore, PullPolicy, RegistryAuth, Registries};
//! use std::path::Path;
//! let store = ImageStore::open_with(Path::new("/var/lib/kumo/agent/images"), Registries::load_default()?)?;
//! let policy = PullPolicy::for_pod(None, "busybox:1.36")?; // imagePullPolicy unset
//! let image = store.ensure("busybox:1.36", policy, &RegistryAuth::Anonymous, &|_| {}).await?;
//! let rootfs = store.mount_rootfs(&image, Path::new("/run/kumo/containers/abc"))?;
//! // ... run the container with rootfs.merged as its root, image.config for its defaults ...
//! store.unmount_rootfs(Path::new("/run/kumo/containers/abc"))?;
//! # Ok(()) }
//! ```
//!
//! Blocking methods (`import`, `mount_rootfs`, `remove`, `collect_garbage`) do file-system work;
//! async callers should run them under `tokio::task::spawn_blocking` (the store is `Clone`).
//!
//! # On-disk layout (`dir` given to [`ImageStore::open`])
//!
//! ```text
//! dir/
//!   index.json              references → manifest digest, config, layers, size, last use
//!                           (JSON, replaced atomically: temp file + rename)
//!   lock                    flock(2) taken around every read-modify-write of index.json, so the
//!                           agent and the `kumo image` CLI can share one store
//!   blobs/sha256/<hex>      content-addressed blobs (manifests, indexes, configs, compressed
//!                           layers); written to tmp/ while hashed, renamed only when the digest
//!                           matches
//!   layers/<hex>/           one unpacked layer per uncompressed digest (diff id), in overlayfs
//!                           form: whiteouts are 0/0 character devices, opaque directories carry
//!                           `trusted.overlay.opaque=y`; unpacked into tmp/ then renamed
//!   layers/empty/           the lower dir of an image without layers
//!   mounts/<key>.json       one record per mounted container rootfs (container dir, image
//!                           digest): images in use cannot be removed or collected
//!   tmp/                    temporary files and directories of in-flight writes
//! ```
//!
//! A container dir given to [`ImageStore::mount_rootfs`] gets `upper/`, `work/` and `merged/`;
//! `merged/` is the container's root.
//!
//! # Registries
//!
//! Registries are reached over HTTPS, except loopback ones (`localhost`, `127.0.0.0/8`, `::1`)
//! and those named as insecure (the agent's `--insecure-registry`), which are reached over plain
//! HTTP. Credentials stored by `kumo registry login` live in `~/.kumo/registries.json` (mode
//! 0600; see [`Credentials`]) and are used when a pull passes [`RegistryAuth::Anonymous`].
#![forbid(unsafe_code)]

mod blobs;
mod digest;
mod error;
mod gc;
mod import;
mod manifest;
mod meta;
mod mount;
mod policy;
mod private;
mod pull;
mod reference;
mod registries;
mod store;
pub mod testing;
mod unpack;

pub use digest::Digest;
pub use error::ImageError;
pub use policy::PullPolicy;
pub use reference::ImageRef;
pub use registries::{Credentials, Registries, RegistryAuth};
pub use store::{
    GcReport, Image, ImageConfig, ImageStore, ImageSummary, PullPhase, PullProgress, Rootfs,
};
