//! The gateway's one error type. Every failure a client can see is a protocol Error with one of
//! the names of docs/protocol.md; the mapping from internal gRPC statuses happens here, once.

use tonic::Code;

/// The protocol's error names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorName {
    UnknownError,
    InvalidRequest,
    MessageTooLarge,
    Unauthorized,
    AttemptedAnonymousOpOnAuthenticatedConnection,
    InvalidIdentityKey,
    UnknownIdentity,
    UnknownDevice,
    UnableToOpenSubscriber,
    RateLimited,
    Unavailable,
}

impl ErrorName {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorName::UnknownError => "unknown_error",
            ErrorName::InvalidRequest => "invalid_request",
            ErrorName::MessageTooLarge => "message_too_large",
            ErrorName::Unauthorized => "unauthorized",
            ErrorName::AttemptedAnonymousOpOnAuthenticatedConnection => {
                "attempted_anonymous_op_on_authenticated_connection"
            }
            ErrorName::InvalidIdentityKey => "invalid_identity_key",
            ErrorName::UnknownIdentity => "unknown_identity",
            ErrorName::UnknownDevice => "unknown_device",
            ErrorName::UnableToOpenSubscriber => "unable_to_open_subscriber",
            ErrorName::RateLimited => "rate_limited",
            ErrorName::Unavailable => "unavailable",
        }
    }
}

/// A failure to report to the client as `Error{name, description}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{description}", name.as_str())]
pub struct GatewayError {
    pub name: ErrorName,
    pub description: String,
}

impl GatewayError {
    pub fn new(name: ErrorName, description: impl Into<String>) -> Self {
        Self {
            name,
            description: description.into(),
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(ErrorName::InvalidRequest, d)
    }
    pub fn unauthorized(d: impl Into<String>) -> Self {
        Self::new(ErrorName::Unauthorized, d)
    }
    pub fn anonymous_op() -> Self {
        Self::new(
            ErrorName::AttemptedAnonymousOpOnAuthenticatedConnection,
            "this operation belongs on an anonymous connection",
        )
    }

    /// Maps an internal service's status. `not_found` names what NOT_FOUND means for the call
    /// (unknown identity for prekeys, unknown device for sends). Internal details of unexpected
    /// failures are logged, never sent to the client.
    pub fn from_status(s: tonic::Status, not_found: ErrorName) -> Self {
        match s.code() {
            Code::InvalidArgument => Self::invalid_request(s.message()),
            Code::NotFound => Self::new(not_found, s.message()),
            Code::ResourceExhausted => Self::new(ErrorName::RateLimited, s.message()),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                tracing::warn!(code = ?s.code(), message = s.message(), "upstream unavailable");
                let d = if s.message().starts_with("attachments need") {
                    s.message().to_string()
                } else {
                    "a backend service is unavailable, retry later".to_string()
                };
                Self::new(ErrorName::Unavailable, d)
            }
            _ => {
                tracing::error!(code = ?s.code(), message = s.message(), "upstream failure");
                Self::new(ErrorName::UnknownError, "internal error")
            }
        }
    }
}

impl From<tassis_proto::address::AddressError> for GatewayError {
    fn from(e: tassis_proto::address::AddressError) -> Self {
        use tassis_proto::address::AddressError as A;
        match e {
            A::IdentityKey(_) => Self::new(ErrorName::InvalidIdentityKey, e.to_string()),
            A::Missing | A::DeviceId(_) => Self::invalid_request(e.to_string()),
        }
    }
}
