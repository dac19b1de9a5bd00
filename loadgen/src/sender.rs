//! Senders: anonymous connections sending to the receivers round robin on an open-loop schedule.
//! Each message's payload starts with its scheduled send time and the run id; latency is always
//! measured from the schedule, so a stalled server shows as latency, not as fewer samples.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use tassis_proto::tassis::{Address, Message, OutboundMessage, message::Payload};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::LoadConfig;
use crate::client::{self, encode};
use crate::receiver::short;
use crate::stats::{Stats, now_us};

/// The (scheduled send time µs, run id) a payload starts with.
pub fn header(payload: &[u8]) -> Option<(u64, u64)> {
    let sent = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let run = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((sent, run))
}

/// Connects every sender, then each sends from `begin` until the stats say stop.
pub async fn start_all(
    cfg: Arc<LoadConfig>,
    stats: Arc<Stats>,
    receivers: Arc<Vec<Address>>,
    begin: Instant,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut conns = Vec::with_capacity(cfg.senders);
    for i in 0..cfg.senders {
        let source = cfg.source_addrs.0[i % cfg.source_addrs.0.len()];
        match client::connect(cfg.senders_url(), source).await {
            Ok((ws, _)) => {
                stats.connected();
                stats.senders_ready.fetch_add(1, Ordering::Relaxed);
                conns.push(ws);
            }
            Err(e) => stats.error(format!("sender connect: {}", short(&e))),
        }
    }
    anyhow::ensure!(!conns.is_empty(), "no sender could connect");
    let n = conns.len();
    // Each sender's share of the rate, with staggered starts.
    let every = Duration::from_secs_f64(n as f64 / cfg.rate as f64);
    let begin = begin.max(Instant::now());
    let begin_wall = now_us() + begin.saturating_duration_since(Instant::now()).as_micros() as u64;
    Ok(conns
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let first = begin + every.mul_f64(i as f64 / n as f64);
            tokio::spawn(send(
                cfg.clone(),
                stats.clone(),
                receivers.clone(),
                ws,
                i,
                n,
                first,
                every,
                begin,
                begin_wall,
            ))
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
async fn send(
    cfg: Arc<LoadConfig>,
    stats: Arc<Stats>,
    receivers: Arc<Vec<Address>>,
    mut ws: client::Stream,
    i: usize,
    n: usize,
    first: Instant,
    every: Duration,
    begin: Instant,
    begin_wall: u64,
) {
    let mut next = first;
    let mut k: usize = 0;
    let mut seq: u32 = 0;
    // Sends awaiting the server's Ack, in order (a connection's requests are answered in order).
    let mut pending: VecDeque<(u32, u64)> = VecDeque::new();
    let mut filler = vec![0x5au8; cfg.message_size];
    loop {
        let sending = stats.is_sending();
        if !sending && pending.is_empty() {
            break;
        }
        let can_send = sending && pending.len() < cfg.inflight;
        tokio::select! {
            _ = tokio::time::sleep_until(next), if can_send => {
                // Everything due now, up to the in-flight bound, then one flush.
                let now = Instant::now();
                let mut wrote = false;
                while next <= now && pending.len() < cfg.inflight && stats.is_sending() {
                    let sent_us = begin_wall + next.saturating_duration_since(begin).as_micros() as u64;
                    filler[..8].copy_from_slice(&sent_us.to_le_bytes());
                    filler[8..16].copy_from_slice(&stats.run_id.to_le_bytes());
                    let to = receivers[(i + k * n) % receivers.len()].clone();
                    seq = seq.wrapping_add(1).max(1);
                    let m = OutboundMessage { to: Some(to), unidentified_sender_message: Bytes::copy_from_slice(&filler) };
                    if ws.feed(encode(seq, Payload::OutboundMessage(m))).await.is_err() {
                        stats.error("sender: write failed");
                        return;
                    }
                    pending.push_back((seq, sent_us));
                    stats.on_sent(sent_us);
                    k += 1;
                    next += every;
                    wrote = true;
                }
                if wrote && ws.flush().await.is_err() {
                    stats.error("sender: write failed");
                    return;
                }
            }
            f = ws.next() => match f {
                Some(Ok(Ws::Binary(b))) => {
                    let Ok(m) = Message::decode(b) else { stats.error("undecodable frame"); continue };
                    let Some(&(front, sent_us)) = pending.front() else { continue };
                    if m.sequence != front {
                        continue;
                    }
                    pending.pop_front();
                    match m.payload {
                        Some(Payload::Ack(_)) => stats.on_server_ack(sent_us, now_us()),
                        Some(Payload::Error(e)) => stats.error(format!("send: {}", e.name)),
                        _ => stats.error("send: unexpected reply"),
                    }
                }
                Some(Ok(Ws::Close(f))) => {
                    stats.error(format!("sender closed by server: {}", f.map(|f| u16::from(f.code)).unwrap_or(0)));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => { stats.error(format!("sender transport: {}", short(&e.into()))); break; }
                None => break,
            },
        }
    }
    let _ = ws.close(None).await;
    stats.connections.fetch_sub(1, Ordering::Relaxed);
}
