//! The agent's typed errors: what stops the agent (a runtime operation's own errors are
//! `kumo_runtime::RuntimeError`).

use kumo_runtime::RuntimeError;
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
