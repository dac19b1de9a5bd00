//! The keystore's one error type, and its mapping onto gRPC status codes that the gateway maps
//! back to protocol Error names.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// The request breaks a rule or a limit; the text says which.
    #[error("{0}")]
    InvalidRequest(String),
    /// The identity has no registered device.
    #[error("no device of this identity is registered")]
    UnknownIdentity,
    /// The storage backend failed; retry later.
    #[error("key storage unavailable: {0}")]
    Unavailable(String),
}

impl From<KeystoreError> for Status {
    fn from(e: KeystoreError) -> Self {
        match e {
            KeystoreError::InvalidRequest(m) => Status::new(Code::InvalidArgument, m),
            KeystoreError::UnknownIdentity => Status::new(Code::NotFound, e.to_string()),
            KeystoreError::Unavailable(_) => Status::new(Code::Unavailable, e.to_string()),
        }
    }
}
