//! WebSocket plumbing under the session: the frame codec (one protobuf `tassis.Message` per
//! binary frame), the writer task with its bounded queue and per-write deadline, and the polite
//! close (send a close frame, then drain what the client still sends so the close is not lost to
//! a TCP reset).

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt, stream::SplitSink, stream::SplitStream};
use prost::Message as _;
use tassis_proto::tassis::{Message, message::Payload};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

pub type Ws = WebSocketStream<TcpStream>;
pub type WsSink = SplitSink<Ws, WsMessage>;
pub type WsSource = SplitStream<Ws>;
/// A frame queued for the writer. Boxed so that each connection's queue (whose first block of 32
/// slots is allocated up front) costs 32 pointers, not 32 messages: idle connections dominate
/// the gateway's memory (BENCHMARKS.md, connection density).
pub type Out = Box<WsMessage>;

/// Longest a closing connection waits for the client's side of the close.
pub const CLOSE_DRAIN: Duration = Duration::from_secs(2);
/// Most frames written before one flush.
const WRITE_BATCH: usize = 64;

/// Encodes one protocol message as a binary frame.
pub fn frame(sequence: u32, payload: Payload) -> Out {
    Box::new(WsMessage::Binary(Bytes::from(
        Message {
            sequence,
            payload: Some(payload),
        }
        .encode_to_vec(),
    )))
}

/// A close frame.
pub fn close_frame(code: CloseCode, reason: &str) -> Out {
    Box::new(WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    })))
}

/// Starts the writer task. Frames queued on the returned sender are written in order, flushed
/// per batch; a write that misses `write_timeout`, or any write error, cancels `failed`.
/// The task ends after writing a close frame or when every sender is gone.
pub fn spawn_writer(
    mut sink: WsSink,
    capacity: usize,
    write_timeout: Duration,
    failed: CancellationToken,
) -> mpsc::Sender<Out> {
    let (tx, mut rx) = mpsc::channel::<Out>(capacity);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut closing = matches!(*first, WsMessage::Close(_));
            let batch = async {
                sink.feed(*first).await?;
                let mut n = 1;
                while !closing && n < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(m) => {
                            closing = matches!(*m, WsMessage::Close(_));
                            sink.feed(*m).await?;
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                sink.flush().await
            };
            match tokio::time::timeout(write_timeout, batch).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "write failed");
                    failed.cancel();
                    return;
                }
                Err(_) => {
                    tracing::debug!("write deadline missed, dropping client");
                    failed.cancel();
                    return;
                }
            }
            if closing {
                return;
            }
        }
    });
    tx
}

/// After a close frame was queued: read (and discard) until the client closes or `CLOSE_DRAIN`
/// passes, so the client gets our frames before the socket goes away.
pub async fn drain(source: &mut WsSource) {
    let _ = tokio::time::timeout(CLOSE_DRAIN, async { while let Some(Ok(_)) = source.next().await {} }).await;
}
