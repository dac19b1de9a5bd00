//! The attachments service's one error type and its gRPC status mapping.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum AttachmentsError {
    #[error("{0}")]
    InvalidRequest(String),
    /// No object store is configured, or it cannot be reached.
    #[error("{0}")]
    Unavailable(String),
}

impl From<AttachmentsError> for Status {
    fn from(e: AttachmentsError) -> Self {
        match e {
            AttachmentsError::InvalidRequest(m) => Status::new(Code::InvalidArgument, m),
            AttachmentsError::Unavailable(m) => Status::new(Code::Unavailable, m),
        }
    }
}
