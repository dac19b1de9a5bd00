//! Gateway configuration: upstream endpoints and every client-facing limit. Each knob is a flag
//! with a `TASSIS_*` env twin, documented in the README, validated before the gateway starts.

use std::time::Duration;

use tassis_ratelimit::quota::Limit;
use tassis_runtime::config::{ensure, parse_duration, parse_size};

#[derive(Clone, Debug, clap::Args)]
pub struct GatewayConfig {
    /// Largest inbound WebSocket frame/message; larger ones get Error message_too_large and close 1009.
    #[arg(long, env = "TASSIS_MAX_FRAME_SIZE", default_value = "64KiB", value_parser = parse_size)]
    pub max_frame_size: u64,

    /// Interval between server pings.
    #[arg(long, env = "TASSIS_PING_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A connection silent (no frame, no pong) this long is closed.
    #[arg(long, env = "TASSIS_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Deadline for each write to a client; a client that cannot take data this fast is dropped.
    #[arg(long, env = "TASSIS_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Time to complete the WebSocket handshake after TCP accept.
    #[arg(long, env = "TASSIS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Messages queued for one connection's writer; a client that lets it fill is disconnected.
    #[arg(long, env = "TASSIS_OUTBOUND_QUEUE", default_value_t = 256)]
    pub outbound_queue: usize,

    /// Deliveries messaging may push for one connection before the gateway has handed them to
    /// the connection's writer (flow-control window); bounds per-connection buffering.
    #[arg(long, env = "TASSIS_DELIVERY_WINDOW", default_value_t = 64)]
    pub delivery_window: u32,

    /// Delivered-but-unacked messages remembered per connection for ack mapping; beyond it the
    /// oldest are forgotten (they stay queued and are redelivered at the next login).
    #[arg(long, env = "TASSIS_MAX_UNACKED_PER_CONNECTION", default_value_t = 10_000)]
    pub max_unacked_per_connection: usize,

    /// Open client connections this gateway accepts; beyond it new ones are closed with 1013.
    #[arg(long, env = "TASSIS_MAX_CONNECTIONS", default_value_t = 200_000)]
    pub max_connections: usize,

    /// Accept Ed25519 identity keys at login.
    #[arg(long, env = "TASSIS_AUTH_ED25519", default_value_t = true, action = clap::ArgAction::Set)]
    pub auth_ed25519: bool,

    /// Accept Signal-style X25519 identity keys with XEdDSA signatures at login.
    #[arg(long, env = "TASSIS_AUTH_XEDDSA", default_value_t = true, action = clap::ArgAction::Set)]
    pub auth_xeddsa: bool,

    /// How often an authenticated device's remaining one-time prekeys are checked.
    #[arg(long, env = "TASSIS_PREKEYS_LOW_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub prekeys_low_interval: Duration,

    /// Below this many one-time prekeys the device is sent PreKeysLow.
    #[arg(long, env = "TASSIS_PREKEYS_LOW_WATERMARK", default_value_t = 10)]
    pub prekeys_low_watermark: u32,

    /// keysRequested in PreKeysLow.
    #[arg(long, env = "TASSIS_PREKEYS_REQUESTED", default_value_t = 20)]
    pub prekeys_requested: u32,

    /// Deadline for each call to an internal service.
    #[arg(long, env = "TASSIS_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,

    /// New connections from one client address (IPv6: one /64), shared by all gateways.
    /// `N/period` (a burst of N, refilled at N per period) or `off`.
    #[arg(long, env = "TASSIS_RATE_CONNECTIONS_PER_IP", default_value = "600/1m")]
    pub rate_connections_per_ip: Limit,

    /// Requests on one connection (everything but acks).
    #[arg(long, env = "TASSIS_RATE_REQUESTS_PER_CONNECTION", default_value = "1200/1m")]
    pub rate_requests_per_connection: Limit,

    /// Messages to one recipient device, from all senders, shared by all gateways.
    #[arg(long, env = "TASSIS_RATE_SENDS_PER_DEVICE", default_value = "600/1m")]
    pub rate_sends_per_device: Limit,

    /// Prekey requests for one identity, from all clients, shared by all gateways.
    #[arg(long, env = "TASSIS_RATE_PREKEY_FETCHES_PER_IDENTITY", default_value = "60/1m")]
    pub rate_prekey_fetches_per_identity: Limit,

    /// Upload authorizations granted to one connection (a request granted none counts one).
    #[arg(
        long,
        env = "TASSIS_RATE_UPLOAD_AUTHORIZATIONS_PER_CONNECTION",
        default_value = "100/1m"
    )]
    pub rate_upload_authorizations_per_connection: Limit,

    /// HTTP header of the WebSocket handshake naming the client's address, set by a trusted proxy
    /// in front of the gateways (such as X-Forwarded-For; its last entry is used). Unset: the TCP
    /// peer address. Only set this when every connection comes through that proxy.
    #[arg(long, env = "TASSIS_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_frame_size: 64 * 1024,
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            outbound_queue: 256,
            delivery_window: 64,
            max_unacked_per_connection: 10_000,
            max_connections: 200_000,
            auth_ed25519: true,
            auth_xeddsa: true,
            prekeys_low_interval: Duration::from_secs(300),
            prekeys_low_watermark: 10,
            prekeys_requested: 20,
            upstream_timeout: Duration::from_secs(10),
            rate_connections_per_ip: Limit::per(600, Duration::from_secs(60)),
            rate_requests_per_connection: Limit::per(1200, Duration::from_secs(60)),
            rate_sends_per_device: Limit::per(600, Duration::from_secs(60)),
            rate_prekey_fetches_per_identity: Limit::per(60, Duration::from_secs(60)),
            rate_upload_authorizations_per_connection: Limit::per(100, Duration::from_secs(60)),
            client_ip_header: None,
        }
    }
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), tassis_runtime::RuntimeError> {
        ensure((128..=64 * 1024 * 1024).contains(&self.max_frame_size), || {
            "--max-frame-size must be 128 bytes..64MiB".into()
        })?;
        ensure(self.ping_interval >= Duration::from_millis(100), || {
            "--ping-interval must be at least 100ms".into()
        })?;
        ensure(self.idle_timeout > self.ping_interval, || {
            "--idle-timeout must be longer than --ping-interval, or idle clients could never answer a ping in time"
                .into()
        })?;
        ensure(self.write_timeout >= Duration::from_millis(10), || {
            "--write-timeout must be at least 10ms".into()
        })?;
        ensure(self.outbound_queue >= 8, || {
            "--outbound-queue must be at least 8".into()
        })?;
        ensure((4..=4096).contains(&self.delivery_window), || {
            "--delivery-window must be 4..=4096".into()
        })?;
        ensure(self.max_unacked_per_connection >= 1, || {
            "--max-unacked-per-connection must be at least 1".into()
        })?;
        ensure(self.max_connections >= 1, || {
            "--max-connections must be at least 1".into()
        })?;
        ensure(self.auth_ed25519 || self.auth_xeddsa, || {
            "at least one of --auth-ed25519 and --auth-xeddsa must be true, or nobody could log in".into()
        })?;
        ensure(self.prekeys_low_interval >= Duration::from_secs(1), || {
            "--prekeys-low-interval must be at least 1s".into()
        })?;
        ensure(self.prekeys_requested >= 1, || {
            "--prekeys-requested must be at least 1".into()
        })?;
        if let Some(h) = &self.client_ip_header {
            ensure(http::HeaderName::from_bytes(h.as_bytes()).is_ok(), || {
                format!("--client-ip-header '{h}' is not an HTTP header name")
            })?;
        }
        Ok(())
    }
}
