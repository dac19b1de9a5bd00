//! The messaging service: durable per-device queues of sealed-sender messages, and their delivery
//! to gateways.
//!
//! - [`backend`] fixes the queue semantics (enqueue with registration check and retention, read in
//!   send order, ack, new-message notification); [`memory`] is the embedded implementation and
//!   [`redis`] the Redis Cluster one (streams + sharded pub/sub).
//! - [`delivery`] serves one gateway's bidirectional delivery stream: it subscribes devices, replays
//!   their unacked backlog, pushes new messages as notifications announce them, and applies acks.
//! - [`metrics`] holds the Prometheus series and the timing/tracing backend wrapper.
//! - [`service`] is the gRPC face; [`registrations`] answers "is this device registered?" for
//!   backends that do not hold registrations themselves.

pub mod backend;
pub mod config;
pub mod delivery;
pub mod error;
pub mod id;
pub mod memory;
pub mod metrics;
pub mod redis;
pub mod registrations;
pub mod service;

pub use backend::{DeviceAddress, QueueBackend, StoredMessage, Watch};
pub use config::MessagingConfig;
pub use error::MessagingError;
pub use id::MessageId;
pub use memory::MemoryQueues;
pub use metrics::Metrics;
pub use redis::RedisQueues;
pub use registrations::{KeystoreRegistrations, Registrations};
pub use service::{MessagingService, serve};
