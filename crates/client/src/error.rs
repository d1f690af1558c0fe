//! Client errors: what the server said (a `Status`), or why it could not be asked.

use kumo_api::Status;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{}", .0.message)]
    Api(Box<Status>),
    /// The server could not be reached.
    #[error("cannot reach kumo server at {server}: {reason} (is `kumo up` running?)")]
    Connect { server: String, reason: String },
    /// The server's certificate is not one the configured CA signed for its address.
    #[error("cannot verify the server certificate of {server}: {reason} (is certificate-authority-data in {config} this cluster's CA?)")]
    Verify {
        server: String,
        reason: String,
        config: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {server}: {reason}")]
    Protocol { server: String, reason: String },
    /// The request could not be built (bad server URL, unserializable body).
    #[error("{0}")]
    Request(String),
}

impl ClientError {
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api(s) => Some(s.code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }
}
