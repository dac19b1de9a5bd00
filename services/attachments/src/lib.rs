//! The attachments service: hands out upload authorizations (S3 presigned POST policies) so that
//! attachments never travel over the client WebSocket.
//!
//! Signing is behind the [`UploadSigner`] trait; without an object store configured the service
//! answers `UNAVAILABLE` with a description that says attachments need an S3 bucket.

pub mod config;
pub mod error;
pub mod service;
pub mod signer;

pub use config::AttachmentsConfig;
pub use error::AttachmentsError;
pub use service::{AttachmentsService, serve};
pub use signer::{NoObjectStore, UploadSigner};
