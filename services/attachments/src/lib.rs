//! The attachments service: hands out upload authorizations (S3 presigned POST policies) so that
//! attachments never travel over the client WebSocket, and short-lived presigned GETs behind the
//! gateway's download redirect, so the bucket stays private.
//!
//! Signing is behind the [`UploadSigner`] trait: [`s3::S3Store`] when a bucket is configured
//! (`--s3-bucket`), otherwise [`NoObjectStore`], which answers `UNAVAILABLE` with a description
//! that says attachments need an S3 bucket. [`post_policy`] builds and signs the POST policies.

pub mod config;
pub mod error;
pub mod post_policy;
pub mod s3;
pub mod service;
pub mod signer;

pub use config::AttachmentsConfig;
pub use error::AttachmentsError;
pub use s3::{S3Store, signer};
pub use service::{AttachmentsService, serve};
pub use signer::{NoObjectStore, UploadSigner};
