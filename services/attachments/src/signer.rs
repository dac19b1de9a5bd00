//! Who signs upload authorizations and download links. [`crate::s3::S3Store`] is the S3
//! implementation (presigned POST with SigV4, presigned GET); [`NoObjectStore`] is the answer when
//! no bucket is configured.

use tassis_proto::tassis::UploadAuthorization;

use crate::AttachmentsError;

#[async_trait::async_trait]
pub trait UploadSigner: Send + Sync + 'static {
    /// One fresh authorization for an upload of 1..=`max_size` bytes.
    async fn authorize(&self, max_size: u64) -> Result<UploadAuthorization, AttachmentsError>;
    /// A short-lived URL that fetches the object `key` (already checked to be an attachment key):
    /// `NotFound` when there is no such object.
    async fn download_url(&self, key: &str) -> Result<String, AttachmentsError> {
        let _ = key;
        Err(AttachmentsError::Unavailable(NO_OBJECT_STORE.into()))
    }
    /// Whether uploads can be authorized at all.
    fn available(&self) -> bool;
}

/// The signer used when no S3 bucket is configured.
pub struct NoObjectStore;

pub const NO_OBJECT_STORE: &str =
    "attachments need an S3 bucket: start the attachments service with --s3-bucket (see README, Attachments)";

#[async_trait::async_trait]
impl UploadSigner for NoObjectStore {
    async fn authorize(&self, _max_size: u64) -> Result<UploadAuthorization, AttachmentsError> {
        Err(AttachmentsError::Unavailable(NO_OBJECT_STORE.into()))
    }
    fn available(&self) -> bool {
        false
    }
}
