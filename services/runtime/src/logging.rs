//! Logging set up once per process: plain or JSON lines on stdout, level from flag/env
//! (`RUST_LOG` syntax).

use crate::RuntimeError;
use clap::ValueEnum;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global tracing subscriber.
pub fn init(format: LogFormat, filter: &str) -> Result<(), RuntimeError> {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_new(filter).map_err(|e| RuntimeError::Logging(format!("bad log filter {filter:?}: {e}")))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    let res = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    res.map_err(|e| RuntimeError::Logging(e.to_string()))
}
