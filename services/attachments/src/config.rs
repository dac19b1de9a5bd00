//! Attachment limits and the S3 bucket (flags with `TASSIS_*` env twins), validated at start with
//! messages that name the flag.

use std::time::Duration;

use tassis_runtime::RuntimeError;
use tassis_runtime::config::{ensure, parse_duration, parse_size};

#[derive(Clone, Debug, clap::Args)]
pub struct AttachmentsConfig {
    /// Largest attachment a client may upload, in bytes (also announced in Configuration).
    #[arg(long, env = "TASSIS_MAX_ATTACHMENT_SIZE", default_value = "100MB", value_parser = parse_size)]
    pub max_attachment_size: u64,

    /// Most upload authorizations handed out per request (numRequested is capped to it).
    #[arg(long, env = "TASSIS_MAX_UPLOAD_AUTHORIZATIONS", default_value_t = 10)]
    pub max_upload_authorizations: u32,

    /// S3 bucket attachments are uploaded to. Unset: attachments answer `unavailable`.
    #[arg(long, env = "TASSIS_S3_BUCKET")]
    pub s3_bucket: Option<String>,

    /// AWS region of the bucket (default: from the AWS environment, e.g. AWS_REGION or the profile).
    #[arg(long, env = "TASSIS_S3_REGION")]
    pub s3_region: Option<String>,

    /// Endpoint URL of an S3-compatible store (MinIO, Ceph, R2, ...). Unset: AWS S3.
    #[arg(long, env = "TASSIS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// Address the bucket as `<endpoint>/<bucket>` instead of `<bucket>.<endpoint host>`.
    #[arg(long, env = "TASSIS_S3_PATH_STYLE", default_value_t = false, action = clap::ArgAction::Set)]
    pub s3_path_style: bool,

    /// How long an upload authorization (the POST policy) is valid.
    #[arg(long, env = "TASSIS_UPLOAD_EXPIRY", default_value = "24h", value_parser = parse_duration)]
    pub upload_expiry: Duration,

    /// Public base URL of the gateway (e.g. https://chat.example.com): downloadURL is
    /// `<public-url>/attachments/<key>`, which redirects to a short-lived presigned GET.
    /// Required with --s3-bucket unless --s3-public-url is set (standalone defaults to its listener).
    #[arg(long, env = "TASSIS_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Public base URL of the bucket's objects (a CDN, or a public bucket): downloadURL is then
    /// `<s3-public-url>/<key>` and the gateway's redirect is not used.
    #[arg(long, env = "TASSIS_S3_PUBLIC_URL")]
    pub s3_public_url: Option<String>,

    /// At start, set a lifecycle rule on the bucket deleting attachments this long after upload
    /// (whole days, rounded up); use the message retention (--max-message-age). Unset: the
    /// bucket's lifecycle is left alone.
    #[arg(long, env = "TASSIS_S3_EXPIRE_AFTER", value_parser = parse_duration)]
    pub s3_expire_after: Option<Duration>,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        Self {
            max_attachment_size: 100_000_000,
            max_upload_authorizations: 10,
            s3_bucket: None,
            s3_region: None,
            s3_endpoint: None,
            s3_path_style: false,
            upload_expiry: Duration::from_secs(24 * 3600),
            public_url: None,
            s3_public_url: None,
            s3_expire_after: None,
        }
    }
}

/// Where downloadURL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownloadBase {
    /// `<gateway public URL>/attachments/<key>`: the gateway redirects to a presigned GET.
    Gateway(String),
    /// `<public base>/<key>`: a CDN or public bucket serves the object itself.
    Public(String),
}

impl DownloadBase {
    /// The downloadURL of `key`.
    pub fn url(&self, key: &str) -> String {
        match self {
            DownloadBase::Gateway(base) => format!("{base}/attachments/{key}"),
            DownloadBase::Public(base) => format!("{base}/{key}"),
        }
    }
}

/// The S3 settings once validated.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub bucket: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub path_style: bool,
    pub upload_expiry: Duration,
    pub download: DownloadBase,
    /// Lifecycle expiration in days, if the rule is to be applied.
    pub expire_after_days: Option<i32>,
}

/// Longest upload authorization: SigV4 presigning's own limit.
pub const MAX_UPLOAD_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

impl AttachmentsConfig {
    pub fn validate(&self) -> Result<(), RuntimeError> {
        ensure(
            self.max_attachment_size >= 1 && self.max_attachment_size <= 5_000_000_000,
            || "--max-attachment-size must be 1 byte..5GB (the S3 single-upload limit)".into(),
        )?;
        ensure((1..=1000).contains(&self.max_upload_authorizations), || {
            "--max-upload-authorizations must be 1..=1000".into()
        })?;
        ensure(
            self.upload_expiry >= Duration::from_secs(1) && self.upload_expiry <= MAX_UPLOAD_EXPIRY,
            || "--upload-expiry must be 1s..7days".into(),
        )?;
        if let Some(b) = set(&self.s3_bucket) {
            ensure(valid_bucket(b), || {
                format!("--s3-bucket {b:?} is not a bucket name (3-63 of a-z, 0-9, '.', '-', '_')")
            })?;
        }
        if let Some(r) = set(&self.s3_region) {
            ensure(r.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'), || {
                format!("--s3-region {r:?} is not a region name (e.g. eu-west-1)")
            })?;
        }
        for (flag, v) in [
            ("--s3-endpoint", &self.s3_endpoint),
            ("--public-url", &self.public_url),
            ("--s3-public-url", &self.s3_public_url),
        ] {
            if let Some(u) = set(v) {
                base_url(flag, u)?;
            }
        }
        if let Some(d) = self.s3_expire_after {
            ensure(
                d >= Duration::from_secs(86_400) && d <= Duration::from_secs(86_400 * 36_500),
                || "--s3-expire-after must be 1day..100years (S3 lifecycle rules count whole days)".into(),
            )?;
        }
        Ok(())
    }

    /// The S3 settings, or None when no bucket is configured. `default_public_url` is the
    /// gateway's own address when it runs in the same process (standalone).
    pub fn s3(&self, default_public_url: Option<&str>) -> Result<Option<S3Settings>, RuntimeError> {
        self.validate()?;
        let Some(bucket) = set(&self.s3_bucket) else {
            return Ok(None);
        };
        let download = match (set(&self.s3_public_url), set(&self.public_url), default_public_url) {
            (Some(public), _, _) => DownloadBase::Public(base_url("--s3-public-url", public)?),
            (None, Some(gw), _) => DownloadBase::Gateway(base_url("--public-url", gw)?),
            (None, None, Some(gw)) => DownloadBase::Gateway(base_url("--public-url", gw)?),
            (None, None, None) => {
                return Err(RuntimeError::Config(
                    "--s3-bucket needs --public-url (the gateway's public base URL, e.g. https://chat.example.com, \
                     for download links) or --s3-public-url (a CDN or public bucket)"
                        .into(),
                ));
            }
        };
        Ok(Some(S3Settings {
            bucket: bucket.to_string(),
            region: set(&self.s3_region).map(str::to_string),
            endpoint: set(&self.s3_endpoint).map(|e| e.trim_end_matches('/').to_string()),
            path_style: self.s3_path_style,
            upload_expiry: self.upload_expiry,
            download,
            expire_after_days: self.s3_expire_after.map(|d| d.as_secs().div_ceil(86_400) as i32),
        }))
    }
}

/// A flag's value, with empty strings (an env twin set to "") treated as unset.
fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// S3 bucket naming rules (lenient on '_' and case-free stores' conventions aside).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'_'))
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks an http(s) base URL (scheme, host, no query or fragment) and returns it without a
/// trailing slash.
pub fn base_url(flag: &str, s: &str) -> Result<String, RuntimeError> {
    let bad = |why: &str| RuntimeError::Config(format!("{flag} {s:?} is not a usable base URL: {why}"));
    let u = url::Url::parse(s).map_err(|e| bad(&e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("expected http:// or https://"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(bad("no query or fragment allowed"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("no credentials allowed in the URL"));
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_bucket() -> AttachmentsConfig {
        AttachmentsConfig {
            s3_bucket: Some("tassis-attachments".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_valid_and_without_s3() {
        let c = AttachmentsConfig::default();
        c.validate().unwrap();
        assert!(c.s3(None).unwrap().is_none());
        let empty = AttachmentsConfig {
            s3_bucket: Some(" ".into()),
            ..Default::default()
        };
        assert!(empty.s3(None).unwrap().is_none(), "an empty env twin is unset");
    }

    #[test]
    fn download_base() {
        let err = with_bucket().s3(None).unwrap_err().to_string();
        assert!(err.contains("--public-url"), "{err}");
        let s = with_bucket().s3(Some("http://127.0.0.1:8080")).unwrap().unwrap();
        assert_eq!(s.download, DownloadBase::Gateway("http://127.0.0.1:8080".into()));
        let c = AttachmentsConfig {
            public_url: Some("https://chat.example.com/".into()),
            ..with_bucket()
        };
        let s = c.s3(Some("http://127.0.0.1:8080")).unwrap().unwrap();
        assert_eq!(
            s.download.url("20250101/x"),
            "https://chat.example.com/attachments/20250101/x"
        );
        let c = AttachmentsConfig {
            s3_public_url: Some("https://cdn.example.com/att".into()),
            ..c
        };
        let s = c.s3(None).unwrap().unwrap();
        assert_eq!(s.download.url("20250101/x"), "https://cdn.example.com/att/20250101/x");
    }

    #[test]
    fn refuses_bad_values_naming_the_flag() {
        for (c, needle) in [
            (
                AttachmentsConfig {
                    s3_bucket: Some("Bad/Bucket".into()),
                    ..Default::default()
                },
                "--s3-bucket",
            ),
            (
                AttachmentsConfig {
                    public_url: Some("ftp://x".into()),
                    ..with_bucket()
                },
                "--public-url",
            ),
            (
                AttachmentsConfig {
                    public_url: Some("chat.example.com".into()),
                    ..with_bucket()
                },
                "--public-url",
            ),
            (
                AttachmentsConfig {
                    s3_endpoint: Some("http://h:1/?q".into()),
                    ..with_bucket()
                },
                "--s3-endpoint",
            ),
            (
                AttachmentsConfig {
                    s3_region: Some("eu west".into()),
                    ..with_bucket()
                },
                "--s3-region",
            ),
            (
                AttachmentsConfig {
                    upload_expiry: Duration::from_secs(8 * 86_400),
                    ..with_bucket()
                },
                "--upload-expiry",
            ),
            (
                AttachmentsConfig {
                    s3_expire_after: Some(Duration::from_secs(3600)),
                    ..with_bucket()
                },
                "--s3-expire-after",
            ),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn lifecycle_days_round_up() {
        let c = AttachmentsConfig {
            public_url: Some("http://h".into()),
            s3_expire_after: Some(Duration::from_secs(30 * 86_400 + 1)),
            ..with_bucket()
        };
        assert_eq!(c.s3(None).unwrap().unwrap().expire_after_days, Some(31));
    }
}
