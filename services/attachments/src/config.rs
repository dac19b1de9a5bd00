//! Attachment limits (flags with `TASSIS_*` env twins).

use tassis_runtime::config::{ensure, parse_size};

#[derive(Clone, Debug, clap::Args)]
pub struct AttachmentsConfig {
    /// Largest attachment a client may upload, in bytes (also announced in Configuration).
    #[arg(long, env = "TASSIS_MAX_ATTACHMENT_SIZE", default_value = "100MB", value_parser = parse_size)]
    pub max_attachment_size: u64,

    /// Most upload authorizations handed out per request (numRequested is capped to it).
    #[arg(long, env = "TASSIS_MAX_UPLOAD_AUTHORIZATIONS", default_value_t = 10)]
    pub max_upload_authorizations: u32,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        Self {
            max_attachment_size: 100_000_000,
            max_upload_authorizations: 10,
        }
    }
}

impl AttachmentsConfig {
    pub fn validate(&self) -> Result<(), tassis_runtime::RuntimeError> {
        ensure(
            self.max_attachment_size >= 1 && self.max_attachment_size <= 5_000_000_000,
            || "--max-attachment-size must be 1 byte..5GB (the S3 single-upload limit)".into(),
        )?;
        ensure((1..=1000).contains(&self.max_upload_authorizations), || {
            "--max-upload-authorizations must be 1..=1000".into()
        })
    }
}
