//! The agent's typed errors: what stops the agent, and what a runtime operation reports.

use std::path::PathBuf;

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A file or directory of the agent's state could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The log endpoint could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

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
