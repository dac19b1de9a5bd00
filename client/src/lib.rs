//! Client side of the tassis protocol (see docs/protocol.md, the byte-exact wire contract).
//!
//! A [`Connection`] is one WebSocket to a tassis server carrying one protobuf `tassis.Message`
//! per binary frame. Used anonymously it fetches prekeys and sends; after
//! [`Connection::login`] with an [`Identity`] (Ed25519, or Signal-style Curve25519 signing with
//! XEdDSA) it registers keys and receives messages, which arrive as [`ServerEvent`]s and are
//! acknowledged with [`Connection::ack`].
//!
//! The crate also builds `tassis-cli`, a small tool to try a server from a terminal.
//!
//! ```no_run
//! # async fn demo() -> tassis_client::Result<()> {
//! use tassis_client::{Connection, Identity, frame};
//! let me = Identity::generate_ed25519();
//! let authed = Connection::connect("ws://127.0.0.1:8080/api").await?;
//! authed.login(&me, b"phone").await?;
//! authed.register(vec![1u8; 32], vec![vec![2u8; 32].into()]).await?;
//!
//! let anon = Connection::connect("ws://127.0.0.1:8080/api").await?;
//! anon.send(frame::address(me.public_key().to_vec(), b"phone".to_vec()), b"hi".to_vec()).await?;
//!
//! let (sequence, payload) = authed.receive().await?;
//! authed.ack(sequence).await?;
//! # let _ = payload; Ok(()) }
//! ```

pub mod connection;
pub mod error;
pub mod frame;
pub mod identity;

pub use connection::{ConnectOptions, Connection, ServerEvent};
pub use error::{ClientError, Result};
pub use identity::{Curve25519Key, Identity, Scheme};
/// The wire schema, re-exported so callers need not depend on `tassis-proto` directly.
pub use tassis_proto::tassis as proto;
