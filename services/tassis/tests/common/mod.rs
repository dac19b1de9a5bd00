//! Shared helpers of the end-to-end tests: start `tassis standalone` on OS-picked ports, make
//! identities and devices, and talk to the server with the project's client.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use tassis_client::proto::{Address, PreKey};
use tassis_client::{ClientError, Connection, Identity, ServerEvent};
use tassis_e2e::Process;

pub mod deployment;
pub mod otlp;

pub const BIN: &str = env!("CARGO_BIN_EXE_tassis");

/// Starts a gateway wired to separately running keystore, messaging and attachments processes.
pub fn gateway_for(ks: &Process, ms: &Process, at: &Process, env: &[(&str, &str)]) -> Process {
    let (ks, ms, at) = (ks.grpc_url(), ms.grpc_url(), at.grpc_url());
    Process::start_with_env(
        BIN,
        "gateway",
        &["--keystore", &ks, "--messaging", &ms, "--attachments", &at],
        env,
    )
}

/// Starts a standalone server with extra flags.
pub fn standalone(args: &[&str]) -> Process {
    Process::start(BIN, "standalone", args)
}

/// A device: its identity, its id and its authenticated connection.
pub struct Device {
    pub identity: Identity,
    pub id: Vec<u8>,
    pub conn: Connection,
}

impl Device {
    pub fn address(&self) -> Address {
        address(&self.identity, &self.id)
    }
}

pub fn address(identity: &Identity, device_id: &[u8]) -> Address {
    Address {
        identity_key: Bytes::copy_from_slice(&identity.public_key()),
        device_id: Bytes::copy_from_slice(device_id),
    }
}

/// Connects and logs in.
pub async fn login(url: &str, identity: &Identity, device_id: &[u8]) -> Connection {
    let c = Connection::connect(url).await.expect("connect");
    c.login(identity, device_id).await.expect("login");
    c
}

/// Connects, logs in and registers a device with `otks` one-time keys.
pub async fn registered(url: &str, identity: Identity, device_id: &[u8], otks: usize) -> Device {
    let conn = login(url, &identity, device_id).await;
    conn.register(spk(&identity, device_id), one_time_keys(device_id, 0..otks))
        .await
        .expect("register");
    Device {
        identity,
        id: device_id.to_vec(),
        conn,
    }
}

/// A recognisable signed prekey for a device.
pub fn spk(identity: &Identity, device_id: &[u8]) -> Bytes {
    let mut v = b"spk:".to_vec();
    v.extend_from_slice(&identity.public_key()[..4]);
    v.extend_from_slice(device_id);
    Bytes::from(v)
}

/// Recognisable one-time keys `otk:<device>:<i>`.
pub fn one_time_keys(device_id: &[u8], range: std::ops::Range<usize>) -> Vec<Bytes> {
    range
        .map(|i| Bytes::from(format!("otk:{}:{i}", String::from_utf8_lossy(device_id))))
        .collect()
}

pub async fn anon(url: &str) -> Connection {
    Connection::connect(url).await.expect("connect")
}

/// The server's error name of a failed request.
pub fn err_name<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Server { name, .. }) => name,
        other => panic!("expected a protocol Error, got {other:?}"),
    }
}

/// Receives one inbound message within 10 s.
pub async fn recv(c: &Connection) -> (u32, Bytes) {
    tokio::time::timeout(Duration::from_secs(10), c.receive())
        .await
        .expect("an inbound message within 10s")
        .expect("inbound message")
}

/// The next event within 10 s.
pub async fn event(c: &Connection) -> ServerEvent {
    tokio::time::timeout(Duration::from_secs(10), c.next_event())
        .await
        .expect("an event within 10s")
        .expect("connection still has events")
}

/// Proves that nothing is pending for `c`: a round trip on the same connection completes (the
/// server handles a connection's frames in order), then no event has arrived before it.
pub async fn assert_no_events(c: &Connection) {
    // numRequested 0 is refused at once by the gateway: a cheap, side-effect-free round trip.
    let _ = c.request_upload_authorizations(0).await;
    let pending = tokio::time::timeout(Duration::from_millis(1), c.next_event()).await;
    assert!(pending.is_err(), "unexpected event: {pending:?}");
}

pub fn prekey_ids(keys: &[PreKey]) -> Vec<Bytes> {
    keys.iter().map(|k| k.device_id.clone()).collect()
}

/// One series' value on a process's /metrics (`name{labels}` exactly as Prometheus prints it), 0
/// if absent.
pub fn metric(admin: std::net::SocketAddr, series: &str) -> f64 {
    let (_, body) = tassis_e2e::http_get(admin, "/metrics").expect("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls a /metrics series until `ok(value)` (a counter moved by a background task), up to 60 s;
/// returns the value.
pub async fn wait_metric(admin: std::net::SocketAddr, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    wait_metric_sum(&[admin], series, ok).await
}

/// Like [`wait_metric`], over the sum of the series on several processes.
pub async fn wait_metric_sum(admins: &[std::net::SocketAddr], series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (a, s) = (admins.to_vec(), series.to_string());
        let v = tokio::task::spawn_blocking(move || a.iter().map(|m| metric(*m, &s)).sum::<f64>())
            .await
            .unwrap();
        if ok(v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{series} stuck at {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
