//! One load connection: TCP from a chosen local address (bind before connect, so each 127.0.0.x
//! source adds its own ephemeral port range), the WebSocket handshake, the server's greeting, and
//! the login and registration of receivers. Frames are `tassis.Message` protobufs, encoded here
//! directly: the hot loops use the WebSocket stream without the client library's request layer.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use tassis_client::{Identity, Scheme, frame};
use tassis_proto::tassis::{Message, Register, message::Payload};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

pub type Stream = WebSocketStream<tokio::net::TcpStream>;

/// The identity of receiver `index`: deterministic from the seed.
pub fn identity(seed: &str, index: usize) -> Identity {
    use sha2::Digest;
    let secret: [u8; 32] = sha2::Sha256::digest(format!("{seed}/{index}")).into();
    Identity::from_secret(Scheme::Ed25519, secret)
}

/// Encodes one protocol message as a binary frame.
pub fn encode(sequence: u32, payload: Payload) -> Ws {
    Ws::Binary(
        Message {
            sequence,
            payload: Some(payload),
        }
        .encode_to_vec()
        .into(),
    )
}

/// Connects from `source` to the gateway at `url` and reads the greeting; returns the stream
/// and the login nonce.
pub async fn connect(url: &str, source: IpAddr) -> anyhow::Result<(Stream, Bytes)> {
    let hostport = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .context("--url must be ws://host:port/path")?;
    let server: SocketAddr = tokio::net::lookup_host(hostport)
        .await?
        .next()
        .context("server address")?;
    let sock = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.bind(SocketAddr::new(source, 0))?;
    let tcp = sock.connect(server).await?;
    tcp.set_nodelay(true)?;
    // Small buffers: idle receivers are many.
    let config = WebSocketConfig::default().read_buffer_size(2048).write_buffer_size(0);
    let (mut ws, _) = client_async_with_config(url, tcp, Some(config)).await?;
    loop {
        match ws.next().await {
            Some(Ok(Ws::Binary(b))) => {
                let m = Message::decode(b)?;
                match m.payload {
                    Some(Payload::AuthChallenge(c)) => return Ok((ws, c.nonce)),
                    Some(Payload::Error(e)) => bail!("{}:{}", e.name, e.description),
                    _ => {}
                }
            }
            Some(Ok(Ws::Close(f))) => bail!("closed by the server: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed during the greeting"),
        }
    }
}

/// Sends one request and waits for its reply (Ack or Error), answering pings meanwhile.
async fn request(ws: &mut Stream, sequence: u32, payload: Payload) -> anyhow::Result<()> {
    ws.send(encode(sequence, payload)).await?;
    loop {
        match ws.next().await {
            Some(Ok(Ws::Binary(b))) => {
                let m = Message::decode(b)?;
                if m.sequence != sequence {
                    continue;
                }
                return match m.payload {
                    Some(Payload::Ack(_)) => Ok(()),
                    Some(Payload::Error(e)) => bail!("{}:{}", e.name, e.description),
                    other => bail!("unexpected reply {other:?}"),
                };
            }
            Some(Ok(Ws::Close(f))) => bail!("closed by the server: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed"),
        }
    }
}

/// Logs in as `identity`'s device `device` and, when `register`, registers it (a signed prekey
/// and no one-time prekeys), so that messages to it are accepted.
pub async fn login(
    ws: &mut Stream,
    nonce: &[u8],
    identity: &Identity,
    device: &[u8],
    register: bool,
) -> anyhow::Result<()> {
    let auth = frame::auth_response(identity, device, nonce);
    request(ws, 1, Payload::AuthResponse(auth)).await.context("login")?;
    if register {
        let r = Register {
            signed_pre_key: Bytes::from_static(b"load-test signed prekey"),
            one_time_pre_keys: vec![],
        };
        request(ws, 2, Payload::Register(r)).await.context("register")?;
    }
    Ok(())
}
