//! The ceiling of the WebSocket layer on this machine, for BENCHMARKS.md: a bare tokio-tungstenite
//! server that echoes every binary frame (same WebSocket settings as the gateway, no protocol, no
//! backends) and a client that drives it like `tassis-load` drives a gateway — N connections,
//! an open-loop total rate of `--message-size` frames, round-trip latency percentiles.
//!
//!     cargo run --release -p tassis-gateway --example ws_echo -- serve --listen 127.0.0.1:9999
//!     cargo run --release -p tassis-gateway --example ws_echo -- drive --url ws://127.0.0.1:9999/ --connections 100 --rate 20000 --duration 20s

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo server.
    Serve {
        #[arg(long, default_value = "127.0.0.1:9999")]
        listen: SocketAddr,
    },
    /// Load: frames echoed per second and round-trip latency.
    Drive {
        #[arg(long, default_value = "ws://127.0.0.1:9999/")]
        url: String,
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Frames per second over all connections.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        #[arg(long, default_value_t = 1024)]
        message_size: usize,
        #[arg(long, default_value = "20s", value_parser = tassis_runtime::config::parse_duration)]
        duration: Duration,
    },
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

#[tokio::main]
async fn main() {
    match Cli::parse().cmd {
        Cmd::Serve { listen } => serve(listen).await,
        Cmd::Drive {
            url,
            connections,
            rate,
            message_size,
            duration,
        } => drive(url, connections, rate, message_size, duration).await,
    }
}

async fn serve(listen: SocketAddr) {
    let l = tokio::net::TcpListener::bind(listen).await.expect("bind");
    eprintln!("echo server on {}", l.local_addr().unwrap());
    loop {
        let Ok((s, _)) = l.accept().await else { continue };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(s, Some(config())).await else {
                return;
            };
            let (mut tx, mut rx) = ws.split();
            while let Some(Ok(m)) = rx.next().await {
                if let Message::Binary(b) = m {
                    if tx.feed(Message::Binary(b)).await.is_err() {
                        return;
                    }
                    // Flush once per burst of frames already read, as the gateway's writer does.
                    if tx.flush().await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

async fn drive(url: String, connections: usize, rate: u64, size: usize, duration: Duration) {
    let echoed = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(parking_lot::Mutex::new(Vec::<u32>::new()));
    let per_conn = Duration::from_secs_f64(connections as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + duration;
    let mut tasks = Vec::new();
    for i in 0..connections {
        let (url, echoed, lat) = (url.clone(), echoed.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config()), true)
                .await
                .expect("connect");
            let (mut tx, mut rx) = ws.split();
            let first = start + per_conn.mul_f64(i as f64 / connections as f64);
            let reader = tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(Ok(m)) = rx.next().await {
                    if let Message::Binary(b) = m {
                        let sent: u64 = u64::from_le_bytes(b[..8].try_into().unwrap());
                        let now = start.elapsed().as_micros() as u64;
                        mine.push(now.saturating_sub(sent) as u32);
                        echoed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                lat.lock().extend(mine);
            });
            let mut next = first;
            let mut payload = vec![0u8; size.max(8)];
            while next < end {
                tokio::time::sleep_until(next.into()).await;
                // Open loop: the timestamp is the intended send time.
                let intended = next.saturating_duration_since(start).as_micros() as u64;
                payload[..8].copy_from_slice(&intended.to_le_bytes());
                if tx
                    .send(Message::Binary(Bytes::copy_from_slice(&payload)))
                    .await
                    .is_err()
                {
                    break;
                }
                next += per_conn;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = tx.close().await;
            let _ = reader.await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut l = lat.lock().clone();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let n = echoed.load(Ordering::Relaxed);
    println!(
        "echoed {n} frames of {size} B in {:.1}s = {:.0}/s (target {rate}/s); round trip ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        duration.as_secs_f64(),
        n as f64 / duration.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
}
