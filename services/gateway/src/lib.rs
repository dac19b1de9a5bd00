//! The WebSocket gateway: terminates client connections and speaks the tassis protocol
//! (docs/protocol.md) on them, calling the keystore, messaging and attachments services over gRPC.
//! It keeps no durable state: killing a gateway loses nothing; clients reconnect elsewhere.
//!
//! Shaped like mini-redis's server: [`listener`] accepts (with a connection cap and shutdown),
//! [`connection`] hides WebSocket framing and the bounded, deadline-guarded writer, [`session`]
//! holds one connection's login and sequencing and dispatches each payload to its module under
//! [`ops`]. [`auth`] verifies logins, [`delivery`] multiplexes all devices' deliveries over one
//! gRPC stream per messaging replica, [`upstream`] holds the gRPC clients, [`download`] answers
//! `GET /attachments/<key>` on the client port with a redirect to a presigned GET.

pub mod auth;
pub mod config;
pub mod connection;
pub mod delivery;
pub mod download;
pub mod error;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod ops;
pub mod session;
pub mod upstream;

pub use config::GatewayConfig;
pub use error::{ErrorName, GatewayError};
pub use listener::{Gateway, serve};
