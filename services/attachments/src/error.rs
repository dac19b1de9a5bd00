//! The attachments service's one error type and its gRPC status mapping.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum AttachmentsError {
    #[error("{0}")]
    InvalidRequest(String),
    /// No such attachment (or not an attachment key at all).
    #[error("{0}")]
    NotFound(String),
    /// No object store is configured, or it cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A configuration value is invalid (start-up only).
    #[error(transparent)]
    Config(#[from] tassis_runtime::RuntimeError),
    /// The object store cannot be used as configured (start-up only): the message says why.
    #[error("{0}")]
    Startup(String),
}

impl From<AttachmentsError> for Status {
    fn from(e: AttachmentsError) -> Self {
        match e {
            AttachmentsError::InvalidRequest(m) => Status::new(Code::InvalidArgument, m),
            AttachmentsError::NotFound(m) => Status::new(Code::NotFound, m),
            AttachmentsError::Unavailable(m) => Status::new(Code::Unavailable, m),
            AttachmentsError::Config(e) => Status::new(Code::Internal, e.to_string()),
            AttachmentsError::Startup(m) => Status::new(Code::Internal, m),
        }
    }
}
