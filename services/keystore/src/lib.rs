//! The keystore service: device registrations (a signed prekey plus one-time prekeys per device)
//! and prekey bundles for X3DH. Key material is opaque bytes to us.
//!
//! The service logic ([`service`]) validates requests and enforces limits; storage is behind the
//! [`KeyBackend`] trait so the same logic runs on the embedded in-memory store ([`memory`]) and on
//! Redis Cluster ([`redis`]). Every backend operation is atomic per identity. [`metrics`] times
//! and traces backend calls.

pub mod backend;
pub mod config;
pub mod error;
pub mod memory;
pub mod metrics;
pub mod redis;
pub mod service;

pub use backend::{DeviceStatus, KeyBackend, RegisterOutcome};
pub use config::KeystoreConfig;
pub use error::KeystoreError;
pub use memory::MemoryKeyStore;
pub use redis::RedisKeyStore;
pub use service::{KeystoreService, serve};
