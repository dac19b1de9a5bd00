//! `tassis-load`: drives a tassis deployment through its public WebSocket protocol, the way
//! clients do, and measures it (BENCHMARKS.md).
//!
//! - [`config`]: the command line.
//! - [`client`]: connecting (from chosen 127.0.0.x source addresses, so one machine can hold
//!   more than 64k connections to one server port), login, register.
//! - [`receiver`] / [`sender`]: the two roles: authenticated devices that ack every delivery,
//!   anonymous connections sending at an open-loop rate.
//! - [`stats`]: counters, HDR latency histograms, progress lines and the report.

pub mod client;
pub mod config;
pub mod receiver;
pub mod sender;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

pub use config::LoadConfig;
pub use stats::{Report, Stats};

/// Runs a load as configured and returns its report.
pub async fn run(cfg: LoadConfig) -> anyhow::Result<Report> {
    cfg.validate()?;
    let cfg = Arc::new(cfg);
    let stats = Arc::new(Stats::new());
    let stop = tokio_util_stop();
    let progress = stats::spawn_progress(stats.clone(), cfg.quiet);

    // Receivers first, at the ramp rate; senders need registered receivers.
    let addresses = receiver::start_all(cfg.clone(), stats.clone(), stop.clone()).await?;
    let ready = stats.receivers_ready();
    if ready == 0 && cfg.receivers > 0 {
        anyhow::bail!("no receiver could connect and log in (see errors above)");
    }
    let addresses = Arc::new(addresses);
    let begin = tokio::time::Instant::now() + Duration::from_millis(200);
    let senders = if cfg.rate > 0 {
        sender::start_all(cfg.clone(), stats.clone(), addresses.clone(), begin).await?
    } else {
        Vec::new()
    };
    stats.start_measuring(begin + cfg.warmup);
    tokio::time::sleep_until(begin + cfg.warmup + cfg.duration).await;
    stats.stop_sending();
    for s in senders {
        let _ = s.await;
    }
    // Let in-flight deliveries arrive (and be acked) before the report.
    let settle_until = tokio::time::Instant::now() + cfg.settle;
    while tokio::time::Instant::now() < settle_until && !stats.settled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = stats.report(&cfg, begin);
    stop.notify_waiters();
    progress.abort();
    Ok(report)
}

fn tokio_util_stop() -> Arc<tokio::sync::Notify> {
    Arc::new(tokio::sync::Notify::new())
}
