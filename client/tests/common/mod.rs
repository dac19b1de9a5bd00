//! A scripted in-process WebSocket server for the client's tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{Signature, VerifyingKey};
use futures::{SinkExt, StreamExt};
use tassis_client::proto::{AuthChallenge, Configuration, Message, message::Payload};
use tassis_client::{ConnectOptions, frame};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub type Ws = WebSocketStream<TcpStream>;

pub const NONCE: [u8; 32] = [7; 32];
pub const MAX_ATTACHMENT: i64 = 123_456;

/// Starts a one-connection server running `script`; returns its URL and the script's task.
pub async fn serve<F, Fut>(script: F) -> (String, JoinHandle<()>)
where
    F: FnOnce(Ws) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/api", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        script(ws).await;
    });
    (url, task)
}

pub async fn put(ws: &mut Ws, sequence: u32, payload: Payload) {
    ws.send(WsMessage::Binary(
        frame::encode(&frame::message(sequence, payload)).into(),
    ))
    .await
    .unwrap();
}

/// Next binary frame from the client, decoded (pings/pongs skipped).
pub async fn take(ws: &mut Ws) -> Message {
    loop {
        match ws.next().await.expect("client went away").unwrap() {
            WsMessage::Binary(b) => return frame::decode(&b).unwrap(),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

pub async fn greet(ws: &mut Ws, challenge_first: bool) {
    let config = Payload::Configuration(Configuration {
        max_attachment_size: MAX_ATTACHMENT,
    });
    let challenge = Payload::AuthChallenge(AuthChallenge {
        nonce: Bytes::from_static(&NONCE),
    });
    if challenge_first {
        put(ws, 1, challenge).await;
        put(ws, 2, config).await;
    } else {
        put(ws, 1, config).await;
        put(ws, 2, challenge).await;
    }
}

pub fn fast() -> ConnectOptions {
    ConnectOptions {
        request_timeout: Duration::from_millis(500),
        handshake_timeout: Duration::from_secs(2),
    }
}

/// The server's signature check from PROTOCOL.md.
pub fn server_verifies(identity_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let key: [u8; 32] = identity_key.try_into().unwrap();
    let mut sig: [u8; 64] = sig.try_into().unwrap();
    let ed = VerifyingKey::from_bytes(&key)
        .map(|k| k.verify_strict(msg, &Signature::from_bytes(&sig)).is_ok())
        .unwrap_or(false);
    let mut u = key;
    u[31] &= 0x7F;
    let sign = sig[63] >> 7;
    sig[63] &= 0x7F;
    let x = MontgomeryPoint(u)
        .to_edwards(sign)
        .map(|p| {
            VerifyingKey::from(p)
                .verify_strict(msg, &Signature::from_bytes(&sig))
                .is_ok()
        })
        .unwrap_or(false);
    ed || x
}
