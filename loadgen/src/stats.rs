//! What the load measures: counters (connections, sent, acked by the server, delivered, acked by
//! receivers, errors by protocol name and transport failures), HDR histograms of send→delivered
//! and send→ack latency (from the scheduled send time: no coordinated omission), a progress line
//! every second, and the final report (human summary and JSON).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use crate::LoadConfig;

/// Microseconds since the Unix epoch (senders stamp messages with it; receivers compare).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Shared by every connection task.
pub struct Stats {
    pub connections: AtomicU64,
    /// Most connections open at once.
    pub peak_connections: AtomicU64,
    pub receivers_ready: AtomicU64,
    pub senders_ready: AtomicU64,
    pub sent: AtomicU64,
    pub server_acked: AtomicU64,
    pub delivered: AtomicU64,
    pub receiver_acked: AtomicU64,
    /// Deliveries from an earlier run (same identities): acked, not counted.
    pub stale: AtomicU64,
    /// Measured-window counts (after the warm-up).
    pub m_sent: AtomicU64,
    pub m_server_acked: AtomicU64,
    pub m_delivered: AtomicU64,
    pub errors: Mutex<BTreeMap<String, u64>>,
    delivered_lat: Mutex<Histogram<u64>>,
    ack_lat: Mutex<Histogram<u64>>,
    /// Unix µs from which sends count as measured.
    measure_from_us: AtomicU64,
    measure_until_us: AtomicU64,
    sending: AtomicBool,
    /// This run's id, in every payload: deliveries of other runs are told apart.
    pub run_id: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        Self {
            connections: AtomicU64::new(0),
            peak_connections: AtomicU64::new(0),
            receivers_ready: AtomicU64::new(0),
            senders_ready: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            server_acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            receiver_acked: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            m_sent: AtomicU64::new(0),
            m_server_acked: AtomicU64::new(0),
            m_delivered: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            delivered_lat: Mutex::new(histogram()),
            ack_lat: Mutex::new(histogram()),
            measure_from_us: AtomicU64::new(u64::MAX),
            measure_until_us: AtomicU64::new(u64::MAX),
            sending: AtomicBool::new(true),
            run_id: now_us() ^ (std::process::id() as u64) << 40,
        }
    }

    /// Counts a newly open connection.
    pub fn connected(&self) {
        let now = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_connections.fetch_max(now, Ordering::Relaxed);
    }

    pub fn receivers_ready(&self) -> u64 {
        self.receivers_ready.load(Ordering::Relaxed)
    }

    pub fn error(&self, what: impl Into<String>) {
        *self.errors.lock().entry(what.into()).or_default() += 1;
    }

    pub fn start_measuring(&self, at: Instant) {
        let wall = now_us() + at.saturating_duration_since(Instant::now()).as_micros() as u64;
        self.measure_from_us.store(wall, Ordering::Relaxed);
    }

    pub fn stop_sending(&self) {
        self.measure_until_us.store(now_us(), Ordering::Relaxed);
        self.sending.store(false, Ordering::Relaxed);
    }

    pub fn is_sending(&self) -> bool {
        self.sending.load(Ordering::Relaxed)
    }

    /// Whether a message scheduled at `sent_us` is in the measured window.
    pub fn measured(&self, sent_us: u64) -> bool {
        sent_us >= self.measure_from_us.load(Ordering::Relaxed)
            && sent_us < self.measure_until_us.load(Ordering::Relaxed)
    }

    pub fn on_sent(&self, sent_us: u64) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if self.measured(sent_us) {
            self.m_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn on_server_ack(&self, sent_us: u64, now: u64) {
        self.server_acked.fetch_add(1, Ordering::Relaxed);
        if self.measured(sent_us) {
            self.m_server_acked.fetch_add(1, Ordering::Relaxed);
            let _ = self.ack_lat.lock().record(now.saturating_sub(sent_us).max(1));
        }
    }

    pub fn on_delivered(&self, sent_us: u64, now: u64) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if self.measured(sent_us) {
            self.m_delivered.fetch_add(1, Ordering::Relaxed);
            let _ = self.delivered_lat.lock().record(now.saturating_sub(sent_us).max(1));
        }
    }

    /// Everything acked by the server was delivered.
    pub fn settled(&self) -> bool {
        self.delivered.load(Ordering::Relaxed) >= self.server_acked.load(Ordering::Relaxed)
    }

    pub fn report(&self, cfg: &LoadConfig, _begin: Instant) -> Report {
        let from = self.measure_from_us.load(Ordering::Relaxed);
        let until = self.measure_until_us.load(Ordering::Relaxed);
        let secs = if until > from && until != u64::MAX {
            (until - from) as f64 / 1e6
        } else {
            cfg.duration.as_secs_f64()
        };
        let rate = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / secs.max(1e-9);
        Report {
            url: cfg.url.clone(),
            receivers: cfg.receivers,
            senders: cfg.senders,
            target_rate: cfg.rate,
            message_size: cfg.message_size,
            measured_seconds: secs,
            connections_held: self.connections.load(Ordering::Relaxed),
            peak_connections: self.peak_connections.load(Ordering::Relaxed),
            receivers_ready: self.receivers_ready.load(Ordering::Relaxed),
            senders_ready: self.senders_ready.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            server_acked: self.server_acked.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            receiver_acked: self.receiver_acked.load(Ordering::Relaxed),
            stale_deliveries: self.stale.load(Ordering::Relaxed),
            sent_per_sec: rate(&self.m_sent),
            server_acked_per_sec: rate(&self.m_server_acked),
            delivered_per_sec: rate(&self.m_delivered),
            send_to_delivered_ms: Percentiles::of(&self.delivered_lat.lock()),
            send_to_ack_ms: Percentiles::of(&self.ack_lat.lock()),
            errors: self.errors.lock().clone(),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The run's result.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub receivers: usize,
    pub senders: usize,
    pub target_rate: u64,
    pub message_size: usize,
    pub measured_seconds: f64,
    pub connections_held: u64,
    pub peak_connections: u64,
    pub receivers_ready: u64,
    pub senders_ready: u64,
    pub sent: u64,
    pub server_acked: u64,
    pub delivered: u64,
    pub receiver_acked: u64,
    pub stale_deliveries: u64,
    pub sent_per_sec: f64,
    pub server_acked_per_sec: f64,
    pub delivered_per_sec: f64,
    pub send_to_delivered_ms: Percentiles,
    pub send_to_ack_ms: Percentiles,
    pub errors: BTreeMap<String, u64>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "connections: peak {}, held at the end {} ({} receivers, {} senders ready)",
            self.peak_connections, self.connections_held, self.receivers_ready, self.senders_ready
        )?;
        writeln!(
            f,
            "totals: sent {}, acked by server {}, delivered {}, acked by receivers {}",
            self.sent, self.server_acked, self.delivered, self.receiver_acked
        )?;
        writeln!(
            f,
            "measured {:.1}s at target {}/s: sent {:.0}/s, acked {:.0}/s, delivered {:.0}/s",
            self.measured_seconds,
            self.target_rate,
            self.sent_per_sec,
            self.server_acked_per_sec,
            self.delivered_per_sec
        )?;
        for (name, p) in [
            ("send->delivered", &self.send_to_delivered_ms),
            ("send->ack", &self.send_to_ack_ms),
        ] {
            writeln!(
                f,
                "{name:16} ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
                p.p50, p.p90, p.p99, p.p999, p.max, p.count
            )?;
        }
        write!(f, "errors: {:?}", self.errors)
    }
}

/// Prints a progress line every second on stderr.
pub fn spawn_progress(stats: Arc<Stats>, quiet: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if quiet {
            return;
        }
        let mut last = (0u64, 0u64, 0u64);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = (
                stats.sent.load(Ordering::Relaxed),
                stats.server_acked.load(Ordering::Relaxed),
                stats.delivered.load(Ordering::Relaxed),
            );
            let p99 = stats.delivered_lat.lock().value_at_quantile(0.99) as f64 / 1000.0;
            let errors: u64 = stats.errors.lock().values().sum();
            eprintln!(
                "conns {:>6}  sent/s {:>6}  acked/s {:>6}  delivered/s {:>6}  errors {:>5}  p99 send->delivered {:.2} ms",
                stats.connections.load(Ordering::Relaxed),
                now.0 - last.0,
                now.1 - last.1,
                now.2 - last.2,
                errors,
                p99
            );
            last = now;
        }
    })
}
