//! One WebSocket connection to a tassis server.
//!
//! Exists to turn the socket's message stream into request/reply calls: the client numbers each
//! message it originates (from 1), the server echoes that sequence on the reply, and a background
//! reader task hands each reply to the call waiting for that sequence. Everything the server
//! originates (inboundMessage, preKeysLow, errors nobody waits for, close) goes to an event
//! channel instead. Calls take `&self`, so one connection can serve concurrent requests; writes
//! go through one mutex-guarded sink, so frames are never interleaved.
//!
//! The reader task keeps reading for the life of the connection, which also makes tungstenite
//! answer the server's keepalive pings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tassis_proto::tassis::{
    Ack, Address, Configuration, Message, OutboundMessage, PreKey, Register, RequestPreKeys,
    RequestUploadAuthorizations, Unregister, UploadAuthorization, message::Payload,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::{ClientError, Result};
use crate::frame;
use crate::identity::Identity;

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the reader keeps draining the socket after the server's Close frame, so the close
/// handshake can complete.
const CLOSE_DRAIN: Duration = Duration::from_secs(5);

/// Tunables of a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Longest wait for one request's reply (including writing the request). Default 10 s.
    pub request_timeout: Duration,
    /// Longest wait for connecting plus receiving Configuration and AuthChallenge. Default 10 s.
    pub handshake_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Something the server sent that is not a reply to a pending request.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// An inboundMessage: answer it with [`Connection::ack`]`(sequence)`.
    Inbound { sequence: u32, payload: Bytes },
    /// The server wants more one-time prekeys (answer with a Register reusing the signedPreKey).
    PreKeysLow { keys_requested: u32 },
    /// An Error no request is waiting for (e.g. about an unreadable frame: sequence 0).
    Error {
        sequence: u32,
        name: String,
        description: String,
    },
    /// Any other server message no request is waiting for (e.g. a reply to a raw frame).
    Unsolicited(Message),
    /// The connection closed. `code` is the WebSocket close code if the server sent one.
    /// Always the last event.
    Closed { code: Option<u16>, reason: String },
}

/// Pending requests and whether the connection is closed, under one lock so no request can be
/// registered after the reader has given up on the connection.
#[derive(Default)]
struct State {
    pending: HashMap<u32, oneshot::Sender<Message>>,
    closed: Option<String>,
}

struct Shared {
    sink: tokio::sync::Mutex<SplitSink<WsStream, WsMessage>>,
    state: Mutex<State>,
    next_sequence: AtomicU32,
}

impl Shared {
    fn next_sequence(&self) -> u32 {
        loop {
            let s = self.next_sequence.fetch_add(1, Ordering::Relaxed);
            if s != 0 {
                return s; // 0 is what the server uses for errors about unreadable frames
            }
        }
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed {
            reason: self.state.lock().unwrap().closed.clone(),
        }
    }

    /// Marks the connection closed and fails every pending request (their senders drop).
    fn mark_closed(&self, reason: &str) {
        let mut state = self.state.lock().unwrap();
        state.closed.get_or_insert_with(|| reason.to_owned());
        state.pending.clear();
    }
}

/// Removes a pending request's waiter when the request finishes or is cancelled.
struct PendingGuard<'a> {
    shared: &'a Shared,
    sequence: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().pending.remove(&self.sequence);
    }
}

/// A connection to a tassis server: anonymous until [`Connection::login`] succeeds.
pub struct Connection {
    shared: Arc<Shared>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<ServerEvent>>,
    reader_done: watch::Receiver<bool>,
    reader: JoinHandle<()>,
    configuration: Configuration,
    nonce: Bytes,
    request_timeout: Duration,
}

impl Connection {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/api`) with default options and waits for the
    /// server's Configuration and AuthChallenge (in either order).
    pub async fn connect(url: &str) -> Result<Connection> {
        Self::connect_with(url, ConnectOptions::default()).await
    }

    /// [`Connection::connect`] with explicit options.
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Connection> {
        let handshake = async {
            let (mut ws, _response) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
            let (configuration, nonce) = read_greeting(&mut ws).await?;
            Ok::<_, ClientError>((ws, configuration, nonce))
        };
        let (ws, configuration, nonce) = tokio::time::timeout(options.handshake_timeout, handshake)
            .await
            .map_err(|_| ClientError::Timeout(options.handshake_timeout))??;

        let (sink, stream) = ws.split();
        let shared = Arc::new(Shared {
            sink: tokio::sync::Mutex::new(sink),
            state: Mutex::new(State::default()),
            next_sequence: AtomicU32::new(1),
        });
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(false);
        let reader = tokio::spawn(read_loop(stream, shared.clone(), events_tx, done_tx));
        Ok(Connection {
            shared,
            events: tokio::sync::Mutex::new(events_rx),
            reader_done: done_rx,
            reader,
            configuration,
            nonce,
            request_timeout: options.request_timeout,
        })
    }

    /// The server's Configuration (maxAttachmentSize).
    pub fn configuration(&self) -> &Configuration {
        &self.configuration
    }

    /// The nonce of this connection's AuthChallenge.
    pub fn nonce(&self) -> &Bytes {
        &self.nonce
    }

    /// The per-request timeout in force.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Whether the connection has closed (or [`Connection::close`] was called).
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().unwrap().closed.is_some()
    }

    /// Authenticates as `identity`'s device `device_id`: sends AuthResponse with the serialized
    /// Login{address, nonce} and the identity's signature over exactly those bytes; expects Ack.
    pub async fn login(&self, identity: &Identity, device_id: &[u8]) -> Result<()> {
        let response = frame::auth_response(identity, device_id, &self.nonce);
        self.expect_ack(Payload::AuthResponse(response)).await
    }

    /// Registers this (authenticated) device's prekeys. Ack.
    pub async fn register(&self, signed_pre_key: impl Into<Bytes>, one_time_pre_keys: Vec<Bytes>) -> Result<()> {
        let register = Register {
            signed_pre_key: signed_pre_key.into(),
            one_time_pre_keys,
        };
        self.expect_ack(Payload::Register(register)).await
    }

    /// Deletes this (authenticated) device's registration. Ack.
    pub async fn unregister(&self) -> Result<()> {
        self.expect_ack(Payload::Unregister(Unregister {})).await
    }

    /// Fetches one PreKey per registered device of `identity_key` not in `known_device_ids`
    /// (anonymous connections only).
    pub async fn request_pre_keys(
        &self,
        identity_key: impl Into<Bytes>,
        known_device_ids: Vec<Bytes>,
    ) -> Result<Vec<PreKey>> {
        let request = RequestPreKeys {
            identity_key: identity_key.into(),
            known_device_ids,
        };
        match frame::into_result(self.request(Payload::RequestPreKeys(request)).await?)? {
            Payload::PreKeys(p) => Ok(p.pre_keys),
            other => Err(frame::unexpected("preKeys", &other)),
        }
    }

    /// Queues `payload` (the sealed-sender message) for `to` (anonymous connections only).
    /// Returns once the server acked, i.e. the message is durably queued.
    pub async fn send(&self, to: Address, payload: impl Into<Bytes>) -> Result<()> {
        let outbound = OutboundMessage {
            to: Some(to),
            unidentified_sender_message: payload.into(),
        };
        self.expect_ack(Payload::OutboundMessage(outbound)).await
    }

    /// Asks for up to `n` presigned attachment upload authorizations.
    pub async fn request_upload_authorizations(&self, n: i32) -> Result<Vec<UploadAuthorization>> {
        let request = RequestUploadAuthorizations { num_requested: n };
        match frame::into_result(self.request(Payload::RequestUploadAuthorizations(request)).await?)? {
            Payload::UploadAuthorizations(u) => Ok(u.authorizations),
            other => Err(frame::unexpected("uploadAuthorizations", &other)),
        }
    }

    /// The next server event, or `None` once the connection is closed and every event (the last
    /// being [`ServerEvent::Closed`]) has been taken.
    pub async fn next_event(&self) -> Option<ServerEvent> {
        self.events.lock().await.recv().await
    }

    /// The next inbound message as `(sequence, payload)`, skipping (and dropping) other events.
    /// Ack it with [`Connection::ack`]. Fails with [`ClientError::Closed`] when the connection
    /// closes.
    pub async fn receive(&self) -> Result<(u32, Bytes)> {
        loop {
            match self.next_event().await {
                Some(ServerEvent::Inbound { sequence, payload }) => return Ok((sequence, payload)),
                Some(ServerEvent::Closed { code, reason }) => {
                    let reason = match code {
                        Some(code) => format!("{code} {reason}"),
                        None => reason,
                    };
                    return Err(ClientError::Closed { reason: Some(reason) });
                }
                Some(other) => tracing::debug!(?other, "receive: skipping event"),
                None => return Err(self.shared.closed_error()),
            }
        }
    }

    /// Acknowledges inboundMessage `sequence` (the server sends no reply).
    pub async fn ack(&self, sequence: u32) -> Result<()> {
        self.write(frame::encode(&frame::message(sequence, Payload::Ack(Ack {}))))
            .await
    }

    /// Sends `payload` under the next sequence number and waits for the reply with that sequence.
    /// An Error reply becomes [`ClientError::Server`]; any other reply is returned as is.
    pub async fn request(&self, payload: Payload) -> Result<Message> {
        let reply = self.round_trip(payload).await?;
        if let Some(Payload::Error(e)) = reply.payload {
            return Err(ClientError::Server {
                name: e.name,
                description: e.description,
            });
        }
        Ok(reply)
    }

    /// Writes `frame` as one binary WebSocket frame, unchanged (for tests: malformed or
    /// hand-built messages). Replies arrive as events ([`ServerEvent::Error`] or
    /// [`ServerEvent::Unsolicited`]) unless their sequence matches a pending request.
    pub async fn send_raw_frame(&self, frame: Vec<u8>) -> Result<()> {
        self.write(frame).await
    }

    /// Closes the connection (WebSocket Close, code 1000) and waits, up to the request timeout,
    /// for the server to finish the close handshake. Pending requests fail with
    /// [`ClientError::Closed`]; a [`ServerEvent::Closed`] event follows.
    /// Closing an already closed connection is a no-op.
    pub async fn close(&self) -> Result<()> {
        if self.is_closed() {
            return Ok(());
        }
        let result = tokio::time::timeout(self.request_timeout, async {
            let mut sink = self.shared.sink.lock().await;
            let close = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            sink.send(WsMessage::Close(Some(close))).await
        })
        .await;
        self.shared.mark_closed("closed by client");
        let mut done = self.reader_done.clone();
        let _ = tokio::time::timeout(self.request_timeout, done.wait_for(|d| *d)).await;
        match result {
            Err(_) => Err(ClientError::Timeout(self.request_timeout)),
            Ok(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))
            | Ok(Err(tokio_tungstenite::tungstenite::Error::AlreadyClosed)) => Ok(()),
            Ok(r) => Ok(r?),
        }
    }

    async fn expect_ack(&self, payload: Payload) -> Result<()> {
        match frame::into_result(self.request(payload).await?)? {
            Payload::Ack(_) => Ok(()),
            other => Err(frame::unexpected("ack", &other)),
        }
    }

    /// Sends a request and returns whatever reply carries its sequence (Errors included).
    async fn round_trip(&self, payload: Payload) -> Result<Message> {
        let sequence = self.shared.next_sequence();
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.state.lock().unwrap();
            if let Some(reason) = &state.closed {
                return Err(ClientError::Closed {
                    reason: Some(reason.clone()),
                });
            }
            state.pending.insert(sequence, tx);
        }
        let _guard = PendingGuard {
            shared: &self.shared,
            sequence,
        };
        let bytes = frame::encode(&frame::message(sequence, payload));
        tokio::time::timeout(self.request_timeout, async {
            self.write_unbounded(bytes).await?;
            rx.await.map_err(|_| self.shared.closed_error())
        })
        .await
        .map_err(|_| ClientError::Timeout(self.request_timeout))?
    }

    async fn write(&self, bytes: Vec<u8>) -> Result<()> {
        tokio::time::timeout(self.request_timeout, self.write_unbounded(bytes))
            .await
            .map_err(|_| ClientError::Timeout(self.request_timeout))?
    }

    async fn write_unbounded(&self, bytes: Vec<u8>) -> Result<()> {
        if self.is_closed() {
            return Err(self.shared.closed_error());
        }
        let mut sink = self.shared.sink.lock().await;
        sink.send(WsMessage::Binary(Bytes::from(bytes))).await?;
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("configuration", &self.configuration)
            .field("nonce", &hex::encode(&self.nonce))
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Reads the server's first two messages, Configuration and AuthChallenge, in either order.
async fn read_greeting(ws: &mut WsStream) -> Result<(Configuration, Bytes)> {
    let mut configuration = None;
    let mut nonce = None;
    while configuration.is_none() || nonce.is_none() {
        let frame = match ws.next().await {
            None => {
                return Err(ClientError::Closed {
                    reason: Some("closed during handshake".into()),
                });
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(WsMessage::Binary(b))) => b,
            Some(Ok(WsMessage::Close(close))) => {
                let (_, reason) = describe_close(close);
                return Err(ClientError::Closed {
                    reason: Some(format!("during handshake: {reason}")),
                });
            }
            Some(Ok(_)) => continue, // ping/pong (answered by tungstenite), stray text
        };
        let message = frame::decode(&frame)?;
        match message.payload {
            Some(Payload::Configuration(c)) if configuration.is_none() => configuration = Some(c),
            Some(Payload::AuthChallenge(c)) if nonce.is_none() => nonce = Some(c.nonce),
            Some(Payload::Error(e)) => {
                return Err(ClientError::Server {
                    name: e.name,
                    description: e.description,
                });
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "unexpected {} during handshake",
                    frame::payload_name_opt(other.as_ref())
                )));
            }
        }
    }
    Ok((configuration.unwrap(), nonce.unwrap()))
}

fn describe_close(close: Option<CloseFrame>) -> (Option<u16>, String) {
    match close {
        Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
        None => (None, "closed by server".into()),
    }
}

/// The background reader: dispatches replies to waiters and everything else to events.
async fn read_loop(
    mut stream: SplitStream<WsStream>,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<ServerEvent>,
    done: watch::Sender<bool>,
) {
    let (code, reason) = loop {
        match stream.next().await {
            None => break (None, "connection ended".to_owned()),
            Some(Err(e)) => break (None, e.to_string()),
            Some(Ok(WsMessage::Binary(b))) => dispatch(&b, &shared, &events),
            Some(Ok(WsMessage::Close(close))) => break describe_close(close),
            Some(Ok(WsMessage::Text(t))) => {
                tracing::warn!(len = t.len(), "ignoring text frame from server")
            }
            Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
        }
    };
    shared.mark_closed(&reason);
    let _ = events.send(ServerEvent::Closed { code, reason });
    // Let tungstenite finish the close handshake (it sends our Close reply while reading).
    let _ = tokio::time::timeout(CLOSE_DRAIN, async { while stream.next().await.is_some() {} }).await;
    let _ = done.send(true);
}

fn dispatch(frame: &[u8], shared: &Shared, events: &mpsc::UnboundedSender<ServerEvent>) {
    let message = match frame::decode(frame) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, len = frame.len(), "dropping undecodable frame from server");
            return;
        }
    };
    let event = match message.payload {
        Some(Payload::InboundMessage(payload)) => ServerEvent::Inbound {
            sequence: message.sequence,
            payload,
        },
        Some(Payload::PreKeysLow(p)) => ServerEvent::PreKeysLow {
            keys_requested: p.keys_requested,
        },
        _ => {
            let waiter = shared.state.lock().unwrap().pending.remove(&message.sequence);
            let message = match waiter {
                Some(tx) => match tx.send(message) {
                    Ok(()) => return,
                    Err(message) => message, // the request gave up just now
                },
                None => message,
            };
            match message.payload {
                Some(Payload::Error(e)) => ServerEvent::Error {
                    sequence: message.sequence,
                    name: e.name,
                    description: e.description,
                },
                _ => ServerEvent::Unsolicited(message),
            }
        }
    };
    let _ = events.send(event);
}
