//! What every tassis role shares, kept small so that a change here rebuilds little: the admin
//! HTTP endpoints ([`admin`]), process shutdown ([`shutdown`]), logging ([`logging`]) and traces
//! ([`telemetry`]: OTLP export, W3C trace context over gRPC), and the
//! clap pieces every role's configuration is built from ([`config`]).

pub mod admin;
pub mod config;
pub mod logging;
pub mod shutdown;
pub mod telemetry;

pub use admin::{AdminServer, Health};
pub use shutdown::Shutdown;

/// Errors of the shared runtime: all of them are start-up problems a person must fix.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// Logging could not be initialised (bad filter, or initialised twice).
    #[error("logging: {0}")]
    Logging(String),
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Binds a TCP listener, turning the OS error into a message that names the address.
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, RuntimeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind { addr, source })
}

/// Milliseconds since the Unix epoch, the unit every timestamp on the wire uses.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
