//! The image store's errors: one enum, lower-case messages, the registry's own text kept.

use std::path::PathBuf;

/// Everything that can go wrong in the image store.
///
/// `Display` gives the message without its source; [`ImageError::full_message`] joins the whole
/// chain (what a pod status should show).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference cannot be parsed (`ErrImagePull`/`InvalidImageName` in a pod status).
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// `imagePullPolicy` is not one of the three values.
    #[error("invalid image pull policy {0:?}: expected Always, IfNotPresent or Never")]
    InvalidPullPolicy(String),
    /// The pull policy is `Never` and the image is not in the store (`ErrImageNeverPull`).
    #[error("image {0} is not present and the pull policy is Never")]
    NeverPull(String),
    /// No image in the store has this reference.
    #[error("image {0} not found in the store")]
    NotFound(String),
    /// The registry refused or failed the pull; `message` is its own text
    /// (`manifest unknown`, `unauthorized: ...`, `connection refused`).
    #[error("pulling {reference}: {message}")]
    Registry { reference: String, message: String },
    /// Content did not hash to the digest that named it; nothing was kept.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// A string that should be a digest is not `sha256:<64 hex>`.
    #[error("invalid digest {0:?}: expected sha256:<64 lower-case hex digits>")]
    InvalidDigest(String),
    /// A layer entry would write outside its layer, or through a symlink.
    #[error("unsafe layer entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: String },
    /// A manifest, index, config or archive is malformed.
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    /// The image index has no manifest for this host.
    #[error("image {reference} has no manifest for {platform}")]
    NoPlatform { reference: String, platform: String },
    /// The image is used by a mounted container rootfs.
    #[error("image {reference} is in use by the container rootfs at {}", container_dir.display())]
    InUse {
        reference: String,
        container_dir: PathBuf,
    },
    /// A file-system operation failed.
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A mount or unmount failed.
    #[error("{context}")]
    Mount {
        context: String,
        #[source]
        source: nix::Error,
    },
}

impl ImageError {
    /// The message followed by every source in the chain, joined by `: `.
    pub fn full_message(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }

    /// True when the failure came from the registry or the network, i.e. a retry may help
    /// (the agent reports `ErrImagePull` then `ImagePullBackOff`).
    pub fn is_pull_error(&self) -> bool {
        matches!(
            self,
            ImageError::Registry { .. }
                | ImageError::DigestMismatch { .. }
                | ImageError::NoPlatform { .. }
        )
    }
}

/// Shorthand for an [`ImageError::Io`] with context.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// Shorthand for an [`ImageError::Invalid`].
pub(crate) fn invalid(what: impl Into<String>, reason: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid {
        what: what.into(),
        reason: reason.to_string(),
    }
}
