//! The messaging service's one error type and its gRPC status mapping.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The recipient device is not registered.
    #[error("recipient device is not registered")]
    UnknownDevice,
    /// The request breaks a rule or limit.
    #[error("{0}")]
    InvalidRequest(String),
    /// A backend (queue store, keystore) failed; retry later.
    #[error("message storage unavailable: {0}")]
    Unavailable(String),
}

impl From<MessagingError> for Status {
    fn from(e: MessagingError) -> Self {
        match e {
            MessagingError::UnknownDevice => Status::new(Code::NotFound, e.to_string()),
            MessagingError::InvalidRequest(m) => Status::new(Code::InvalidArgument, m),
            MessagingError::Unavailable(_) => Status::new(Code::Unavailable, e.to_string()),
        }
    }
}
