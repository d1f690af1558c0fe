//! The runtime's typed error: why starting, killing or cleaning up a container failed.

use std::path::PathBuf;

/// Why a runtime operation failed (starting, killing or cleaning up a container).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The container's definition cannot be run by this runtime.
    #[error("{0}")]
    InvalidContainer(String),
    /// The supervising shim could not be started or did not answer.
    #[error("shim: {0}")]
    Shim(String),
    /// The container is not known to the runtime.
    #[error("no container {container:?} in pod {uid}")]
    NotFound { uid: String, container: String },
}

impl RuntimeError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            path: path.into(),
            source,
        }
    }
}
