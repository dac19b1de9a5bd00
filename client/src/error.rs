//! The one error type of the client.
//!
//! Exists so callers can tell a protocol-level refusal by the server (`Server`, carrying the
//! wire `Error{name, description}`) from transport failures, timeouts and local mistakes, and
//! match on the server's error `name` (`unauthorized`, `unknown_identity`, ...) without parsing
//! strings.

use std::time::Duration;

/// Everything that can go wrong in the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a protocol `Error`. Displays as `name:description`, the
    /// protocol's textual form of an error.
    #[error("{name}:{description}")]
    Server { name: String, description: String },

    /// The WebSocket failed (connect, read or write).
    #[error("websocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),

    /// A frame from the server was not a valid `tassis.Message`.
    #[error("undecodable frame from server: {0}")]
    Decode(prost::DecodeError),

    /// The server sent something the protocol does not allow at this point (wrong reply type,
    /// unexpected message during the handshake, ...).
    #[error("protocol violation: {0}")]
    Protocol(String),

    /// No reply (or no handshake) within the configured time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// The connection is closed; no more requests can be made on it.
    #[error("connection closed{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed { reason: Option<String> },

    /// A key could not be parsed or has the wrong length.
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}

// The causes above are shown in the Display text rather than exposed as `source()`, so error
// chains (`{:#}`) do not repeat them.
impl From<prost::DecodeError> for ClientError {
    fn from(e: prost::DecodeError) -> Self {
        ClientError::Decode(e)
    }
}

impl ClientError {
    /// The server's error name if this is a protocol `Error`, e.g. `Some("unknown_identity")`.
    pub fn server_error_name(&self) -> Option<&str> {
        match self {
            ClientError::Server { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// Result with [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
