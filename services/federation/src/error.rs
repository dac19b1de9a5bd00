//! The federation crate's one error type, and its gRPC status mapping (what a peer, or the
//! messaging and keystore services wrapping this crate's backends, see).

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// A signed server-to-server request or reply did not verify (unknown peer, bad signature,
    /// wrong addressee, stale, replayed). The text says which, without echoing the payload.
    #[error("refused: {0}")]
    Unauthenticated(String),
    /// A request breaks a rule or limit.
    #[error("{0}")]
    InvalidRequest(String),
    /// A backend (the local Redis, the presence directory) or a peer failed; retry later.
    #[error("federation unavailable: {0}")]
    Unavailable(String),
    /// Configuration that cannot work; a start-up message.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl From<FederationError> for Status {
    fn from(e: FederationError) -> Self {
        match e {
            FederationError::Unauthenticated(_) => Status::new(Code::Unauthenticated, e.to_string()),
            FederationError::InvalidRequest(m) => Status::new(Code::InvalidArgument, m),
            FederationError::Unavailable(_) => Status::new(Code::Unavailable, e.to_string()),
            FederationError::Config(_) => Status::new(Code::Internal, e.to_string()),
        }
    }
}

impl From<tassis_redis::RedisError> for FederationError {
    fn from(e: tassis_redis::RedisError) -> Self {
        FederationError::Unavailable(e.to_string())
    }
}

impl From<tassis_redis::fred::error::Error> for FederationError {
    fn from(e: tassis_redis::fred::error::Error) -> Self {
        FederationError::Unavailable(e.to_string())
    }
}

impl From<FederationError> for tassis_messaging::MessagingError {
    fn from(e: FederationError) -> Self {
        match e {
            FederationError::InvalidRequest(m) => tassis_messaging::MessagingError::InvalidRequest(m),
            other => tassis_messaging::MessagingError::Unavailable(other.to_string()),
        }
    }
}

impl From<FederationError> for tassis_keystore::KeystoreError {
    fn from(e: FederationError) -> Self {
        match e {
            FederationError::InvalidRequest(m) => tassis_keystore::KeystoreError::InvalidRequest(m),
            other => tassis_keystore::KeystoreError::Unavailable(other.to_string()),
        }
    }
}
