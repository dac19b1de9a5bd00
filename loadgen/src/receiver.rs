//! Receivers: authenticated devices that ack every delivery at once and record its latency from
//! the time the sender scheduled it (stamped in the payload).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use prost::Message as _;
use tassis_proto::tassis::{Ack, Address, Message, message::Payload};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::client::{self, encode};
use crate::stats::{Stats, now_us};
use crate::{LoadConfig, sender::header};

/// Device id of every receiver.
pub const DEVICE: &[u8] = b"load";

/// Connects and logs in all receivers at the ramp rate; returns the addresses of those ready.
pub async fn start_all(cfg: Arc<LoadConfig>, stats: Arc<Stats>, stop: Arc<Notify>) -> anyhow::Result<Vec<Address>> {
    let (tx, mut rx) = mpsc::channel(1024);
    let gap = Duration::from_secs_f64(1.0 / cfg.ramp as f64);
    let spawner = {
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            for i in 0..cfg.receivers {
                next += gap;
                tokio::time::sleep_until(next).await;
                tokio::spawn(receive(cfg.clone(), stats.clone(), stop.clone(), i, tx.clone()));
            }
        })
    };
    let mut ready = Vec::with_capacity(cfg.receivers);
    for _ in 0..cfg.receivers {
        match rx.recv().await {
            Some(Some(a)) => ready.push(a),
            Some(None) => {}
            None => break,
        }
    }
    spawner.await?;
    Ok(ready)
}

async fn receive(
    cfg: Arc<LoadConfig>,
    stats: Arc<Stats>,
    stop: Arc<Notify>,
    i: usize,
    ready: mpsc::Sender<Option<Address>>,
) {
    let index = cfg.first_receiver + i;
    let identity = client::identity(&cfg.seed, index);
    let source = cfg.source_addrs.0[i % cfg.source_addrs.0.len()];
    let mut ws = match client::connect(&cfg.url, source).await {
        Ok((mut ws, nonce)) => match client::login(&mut ws, &nonce, &identity, DEVICE, cfg.rate > 0).await {
            Ok(()) => ws,
            Err(e) => {
                stats.error(format!("receiver login: {}", short(&e)));
                let _ = ready.send(None).await;
                return;
            }
        },
        Err(e) => {
            stats.error(format!("receiver connect: {}", short(&e)));
            let _ = ready.send(None).await;
            return;
        }
    };
    stats.connected();
    stats.receivers_ready.fetch_add(1, Ordering::Relaxed);
    let address = Address {
        identity_key: identity.public_key().to_vec().into(),
        device_id: DEVICE.into(),
    };
    let _ = ready.send(Some(address)).await;
    drop(ready);
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let frame = tokio::select! {
            _ = &mut stopped => break,
            f = ws.next() => f,
        };
        match frame {
            Some(Ok(Ws::Binary(b))) => {
                let Ok(m) = Message::decode(b) else {
                    stats.error("undecodable frame");
                    continue;
                };
                match m.payload {
                    Some(Payload::InboundMessage(payload)) => {
                        match header(&payload) {
                            Some((sent_us, run)) if run == stats.run_id => stats.on_delivered(sent_us, now_us()),
                            _ => {
                                stats.stale.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        if ws.send(encode(m.sequence, Payload::Ack(Ack {}))).await.is_err() {
                            stats.error("receiver: ack write failed");
                            break;
                        }
                        stats.receiver_acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Payload::Error(e)) => stats.error(format!("receiver: {}", e.name)),
                    _ => {}
                }
            }
            Some(Ok(Ws::Close(f))) => {
                stats.error(format!(
                    "receiver closed by server: {}",
                    f.map(|f| u16::from(f.code)).unwrap_or(0)
                ));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                stats.error(format!("receiver transport: {}", short(&e.into())));
                break;
            }
            None => break,
        }
    }
    stats.connections.fetch_sub(1, Ordering::Relaxed);
}

/// An error's first line, with EMFILE spelled out (the open-file limit bounds connections).
pub fn short(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    if text.contains("Too many open files") || text.contains("os error 24") {
        return "EMFILE (open-file limit reached: ulimit -n)".into();
    }
    if text.contains("os error 99") || text.contains("os error 98") {
        return "no free local port (ephemeral ports exhausted, TIME_WAIT included): add --source-addrs".into();
    }
    let first = text.lines().next().unwrap_or("");
    // A protocol Error "name:description": count by name (descriptions vary, e.g. retry times).
    match first.split_once(':') {
        Some((name, _)) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => name.into(),
        _ => first.chars().take(120).collect(),
    }
}
