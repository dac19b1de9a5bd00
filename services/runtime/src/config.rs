//! Configuration pieces shared by every role. Each knob is a flag with a `TASSIS_*` environment
//! twin (clap `env`), has a documented default, and is validated before anything starts.

use crate::logging::LogFormat;
use std::net::SocketAddr;
use std::time::Duration;

/// Flags every role takes.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// Address of the role's main listener: clients' WebSocket for gateway/standalone, gRPC for
    /// the internal services.
    #[arg(long, env = "TASSIS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of the admin HTTP listener (/healthz, /readyz, /metrics).
    #[arg(long, env = "TASSIS_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Log format.
    #[arg(long, env = "TASSIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `tassis_gateway=debug,info`).
    #[arg(long, env = "TASSIS_LOG", default_value = "info")]
    pub log: String,

    /// Upper bound on how long a graceful shutdown may take before remaining work is abandoned.
    #[arg(long, env = "TASSIS_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// Parses durations such as `500ms`, `15s`, `5m`, `30days`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration (try 15s, 5m, 30days): {e}"))
}

/// Parses byte sizes: a plain number of bytes, or with a KiB/MiB/GiB (1024-based) or KB/MB/GB
/// (1000-based) suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 65536, 64KiB, 100MB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

/// Fails with a clear message unless `cond` holds.
pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), crate::RuntimeError> {
    if cond {
        Ok(())
    } else {
        Err(crate::RuntimeError::Config(msg()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
        assert!(parse_size("12xb").is_err());
        assert!(parse_size("abc").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("30days").unwrap(), Duration::from_secs(30 * 86400));
        assert!(parse_duration("soon").is_err());
    }
}
