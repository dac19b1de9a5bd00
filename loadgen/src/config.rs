//! The load's knobs (flags with `TASSIS_LOAD_*` env twins), validated before anything connects.

use std::net::IpAddr;
use std::time::Duration;

use tassis_runtime::config::parse_duration;

#[derive(Clone, Debug, clap::Parser)]
#[command(name = "tassis-load", about = "Load generator speaking the tassis protocol")]
pub struct LoadConfig {
    /// Gateway WebSocket URL.
    #[arg(long, env = "TASSIS_LOAD_URL", default_value = "ws://127.0.0.1:8080/api")]
    pub url: String,

    /// Where the anonymous senders connect instead of --url, e.g. another federated deployment
    /// (receivers at their home --url, senders elsewhere: the load crosses the federation).
    #[arg(long, env = "TASSIS_LOAD_SENDER_URL")]
    pub sender_url: Option<String>,

    /// Authenticated receiver devices (each logs in, registers and acks every delivery).
    #[arg(long, env = "TASSIS_LOAD_RECEIVERS", default_value_t = 100)]
    pub receivers: usize,

    /// Anonymous sender connections.
    #[arg(long, env = "TASSIS_LOAD_SENDERS", default_value_t = 10)]
    pub senders: usize,

    /// Messages per second, all senders together (open loop: sends are scheduled, latency is
    /// measured from the scheduled time). 0: no traffic, only hold the receivers (idle mode).
    #[arg(long, env = "TASSIS_LOAD_RATE", default_value_t = 1000)]
    pub rate: u64,

    /// Payload bytes per message (at least 16: send time and id).
    #[arg(long, env = "TASSIS_LOAD_MESSAGE_SIZE", default_value_t = 1024)]
    pub message_size: usize,

    /// How long to send (after the warm-up), or to hold connections in idle mode.
    #[arg(long, env = "TASSIS_LOAD_DURATION", default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Sending before measuring starts (counted apart).
    #[arg(long, env = "TASSIS_LOAD_WARMUP", default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// New connections per second while ramping up.
    #[arg(long, env = "TASSIS_LOAD_RAMP", default_value_t = 2000)]
    pub ramp: u64,

    /// Sends a sender may have awaiting the server's Ack; beyond it the sender waits (and the
    /// wait shows in the latency, measured from the scheduled time).
    #[arg(long, env = "TASSIS_LOAD_INFLIGHT", default_value_t = 64)]
    pub inflight: usize,

    /// Longest wait after sending stops for the last deliveries and acks.
    #[arg(long, env = "TASSIS_LOAD_SETTLE", default_value = "10s", value_parser = parse_duration)]
    pub settle: Duration,

    /// Local addresses to connect from, round robin: a number n (127.0.0.1 … 127.0.0.n) or a
    /// comma-separated list. Each gives another ~28k ephemeral ports towards one server port.
    #[arg(long, env = "TASSIS_LOAD_SOURCE_ADDRS", default_value = "1", value_parser = parse_sources)]
    pub source_addrs: Sources,

    /// Identities are derived from this seed and the receiver index, so runs are reproducible
    /// and several processes (different --first-receiver) never collide.
    #[arg(long, env = "TASSIS_LOAD_SEED", default_value = "tassis-load")]
    pub seed: String,

    /// Index of this process's first receiver (run several processes side by side).
    #[arg(long, env = "TASSIS_LOAD_FIRST_RECEIVER", default_value_t = 0)]
    pub first_receiver: usize,

    /// Write the report as JSON to this file ("-": stdout).
    #[arg(long, env = "TASSIS_LOAD_JSON")]
    pub json: Option<String>,

    /// No progress lines.
    #[arg(long, env = "TASSIS_LOAD_QUIET")]
    pub quiet: bool,
}

/// Local source addresses.
#[derive(Clone, Debug)]
pub struct Sources(pub Vec<IpAddr>);

fn parse_sources(s: &str) -> Result<Sources, String> {
    if let Ok(n) = s.parse::<u8>() {
        if n == 0 {
            return Err("--source-addrs must be at least 1".into());
        }
        return Ok(Sources((1..=n).map(|i| IpAddr::from([127, 0, 0, i])).collect()));
    }
    s.split(',')
        .map(|a| a.trim().parse().map_err(|_| format!("'{a}' is not an IP address")))
        .collect::<Result<_, _>>()
        .map(Sources)
}

impl LoadConfig {
    /// Defaults, for tests.
    pub fn new(url: impl Into<String>) -> Self {
        let mut c = <Self as clap::Parser>::parse_from(["tassis-load"]);
        c.url = url.into();
        c
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.message_size >= 16, "--message-size must be at least 16 bytes");
        anyhow::ensure!(
            self.rate == 0 || self.receivers > 0,
            "--rate needs at least one receiver"
        );
        anyhow::ensure!(self.rate == 0 || self.senders > 0, "--rate needs at least one sender");
        anyhow::ensure!(self.ramp > 0, "--ramp must be at least 1 connection per second");
        anyhow::ensure!(self.inflight > 0, "--inflight must be at least 1");
        anyhow::ensure!(self.url.starts_with("ws://"), "--url must be ws://host:port/path");
        anyhow::ensure!(
            self.senders_url().starts_with("ws://"),
            "--sender-url must be ws://host:port/path"
        );
        Ok(())
    }

    /// Where senders connect.
    pub fn senders_url(&self) -> &str {
        self.sender_url.as_deref().unwrap_or(&self.url)
    }
}
