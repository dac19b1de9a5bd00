//! The S3 object store: the client (credentials and region from the standard AWS chain: env,
//! profile, web identity for IRSA, container and instance metadata), the start-up bucket check,
//! the optional lifecycle rule, upload authorizations (presigned POST, see [`crate::post_policy`])
//! and short-lived presigned GETs behind the gateway's download redirect.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, ProvideCredentials, Region, SharedCredentialsProvider};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
};
use tassis_proto::tassis::UploadAuthorization;

use crate::config::{DownloadBase, S3Settings};
use crate::post_policy::{PostPolicy, object_key};
use crate::{AttachmentsError, UploadSigner};

/// How long the presigned GET behind a download redirect is valid (the client follows the
/// redirect at once; a download in progress is not cut off when it lapses).
pub const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(5 * 60);

/// Id of the lifecycle rule `--s3-expire-after` maintains; other rules are left as they are.
pub const LIFECYCLE_RULE_ID: &str = "tassis-attachments-expiry";

/// Temporary credentials are renewed when they have less than this left, so that
/// authorizations (which cannot outlive the credentials that signed them) last a while.
const CREDENTIALS_REFRESH_BEFORE: Duration = Duration::from_secs(15 * 60);

/// An S3 bucket holding attachments.
pub struct S3Store {
    client: Client,
    settings: S3Settings,
    region: String,
    /// Where clients POST uploads: the bucket's URL (`https://<bucket>.s3.<region>.amazonaws.com/`,
    /// or `<endpoint>/<bucket>` path-style).
    upload_url: String,
    credentials: CredentialCache,
}

impl S3Store {
    /// Builds the client from the AWS chain and the settings, checks that the bucket is
    /// reachable with these credentials, applies the lifecycle rule if asked, and works out the
    /// upload URL. Every failure says what is wrong and what to change.
    pub async fn connect(settings: S3Settings) -> Result<Self, AttachmentsError> {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(20))
            .operation_timeout(Duration::from_secs(60))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(r) = &settings.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        let region = sdk.region().map(|r| r.to_string()).ok_or_else(|| {
            AttachmentsError::Startup(
                "S3: no AWS region: set --s3-region (or AWS_REGION / the profile's region)".into(),
            )
        })?;
        let provider = sdk
            .credentials_provider()
            .ok_or_else(|| AttachmentsError::Startup("S3: no AWS credentials provider could be set up".into()))?;
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(settings.path_style);
        if let Some(e) = &settings.endpoint {
            conf = conf.endpoint_url(e);
        }
        let store = Self {
            client: Client::from_conf(conf.build()),
            region,
            upload_url: String::new(),
            credentials: CredentialCache::new(provider),
            settings,
        };
        store.check_bucket().await?;
        if let Some(days) = store.settings.expire_after_days {
            store.apply_lifecycle(days).await?;
        }
        let upload_url = store.bucket_url().await?;
        let store = Self { upload_url, ..store };
        tracing::info!(
            bucket = %store.settings.bucket,
            region = %store.region,
            upload_url = %store.upload_url,
            downloads = %match &store.settings.download {
                DownloadBase::Gateway(b) => format!("{b}/attachments/<key> (redirect to presigned GET)"),
                DownloadBase::Public(b) => format!("{b}/<key>"),
            },
            "attachments on S3"
        );
        Ok(store)
    }

    /// Where the bucket is, for messages.
    fn location(&self) -> String {
        match &self.settings.endpoint {
            Some(e) => format!("bucket {:?} at {e}", self.settings.bucket),
            None => format!("bucket {:?} (AWS S3, region {})", self.settings.bucket, self.region),
        }
    }

    /// HeadBucket: the bucket exists, is reachable, and these credentials may use it.
    pub async fn check_bucket(&self) -> Result<(), AttachmentsError> {
        let err = match self
            .client
            .head_bucket()
            .bucket(&self.settings.bucket)
            .send()
            .instrument(s3_span("HeadBucket"))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let why = match &err {
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                match status {
                    404 => "it does not exist: create it (see README, Attachments) or fix --s3-bucket".to_string(),
                    403 => "access denied: the credentials found in the AWS chain (env, profile, web identity, \
                            instance metadata) lack s3:ListBucket on it, or it belongs to another account"
                        .to_string(),
                    301 => {
                        let actual = se
                            .raw()
                            .headers()
                            .get("x-amz-bucket-region")
                            .unwrap_or("another region");
                        format!("it is in {actual}: set --s3-region {actual}")
                    }
                    400 => "bad request (HTTP 400): wrong --s3-region, or --s3-path-style needed?".to_string(),
                    s => format!("HTTP {s}: {}", error_chain(&err)),
                }
            }
            SdkError::TimeoutError(_) => "timed out: check --s3-endpoint / network access to S3 from here".to_string(),
            _ => {
                tracing::debug!(error = %DisplayErrorContext(&err), "HeadBucket failed");
                if DisplayErrorContext(&err).to_string().contains("CredentialsNotLoaded") {
                    "no AWS credentials found in the standard chain: provide them as AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE, ~/.aws), web identity (IRSA), container \
                     credentials or instance metadata"
                        .to_string()
                } else {
                    format!("cannot reach it: {}", error_chain(&err))
                }
            }
        };
        Err(AttachmentsError::Startup(format!(
            "S3 {} is unusable: {why}",
            self.location()
        )))
    }

    /// Sets the lifecycle rule deleting attachments `days` after upload, keeping any other rules.
    pub async fn apply_lifecycle(&self, days: i32) -> Result<(), AttachmentsError> {
        let fail = |what: &str, e: String| {
            AttachmentsError::Startup(format!(
                "S3 {}: cannot {what} the lifecycle configuration (--s3-expire-after needs \
                 s3:GetLifecycleConfiguration and s3:PutLifecycleConfiguration; unset it to manage \
                 expiry yourself): {e}",
                self.location()
            ))
        };
        let bucket = &self.settings.bucket;
        let existing = match self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(bucket)
            .send()
            .instrument(s3_span("GetBucketLifecycleConfiguration"))
            .await
        {
            Ok(out) => out.rules.unwrap_or_default(),
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Vec::new(),
            Err(e) => return Err(fail("read", describe(&e))),
        };
        let Some(rules) = merge_lifecycle(existing, days) else {
            tracing::info!(bucket = %bucket, days, "lifecycle rule already in place");
            return Ok(());
        };
        let config = BucketLifecycleConfiguration::builder()
            .set_rules(Some(rules))
            .build()
            .map_err(|e| fail("build", e.to_string()))?;
        self.client
            .put_bucket_lifecycle_configuration()
            .bucket(bucket)
            .lifecycle_configuration(config)
            .send()
            .instrument(s3_span("PutBucketLifecycleConfiguration"))
            .await
            .map_err(|e| fail("write", describe(&e)))?;
        tracing::info!(bucket = %bucket, days, rule = LIFECYCLE_RULE_ID, "lifecycle rule applied");
        Ok(())
    }

    /// The bucket's URL as the SDK addresses it (endpoint resolution, path style, partitions):
    /// a presigned GET of a placeholder key, minus the key and the query.
    async fn bucket_url(&self) -> Result<String, AttachmentsError> {
        let presigned = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key("k")
            .presigned(PresigningConfig::expires_in(Duration::from_secs(60)).expect("valid duration"))
            .await
            .map_err(|e| {
                AttachmentsError::Startup(format!("S3 {}: cannot presign: {}", self.location(), error_chain(&e)))
            })?;
        upload_url_from_presigned(presigned.uri()).ok_or_else(|| {
            AttachmentsError::Startup(format!(
                "S3 {}: unexpected object URL {:?}",
                self.location(),
                presigned.uri()
            ))
        })
    }
}

#[async_trait::async_trait]
impl UploadSigner for S3Store {
    async fn authorize(&self, max_size: u64) -> Result<UploadAuthorization, AttachmentsError> {
        let creds = self.credentials.get().instrument(s3_span("credentials")).await?;
        let _span = s3_span("sign PostObject policy").entered();
        let signed_at = whole_seconds(SystemTime::now());
        let mut expires_at = signed_at + self.settings.upload_expiry;
        // A policy cannot outlive the (temporary) credentials that signed it.
        if let Some(exp) = creds.expiry() {
            expires_at = expires_at.min(whole_seconds(exp));
        }
        let key = object_key(signed_at);
        let policy = PostPolicy {
            bucket: &self.settings.bucket,
            key: &key,
            max_size,
            region: &self.region,
            access_key_id: creds.access_key_id(),
            session_token: creds.session_token(),
            signed_at,
            expires_at,
        };
        let lifetime = expires_at.duration_since(signed_at).unwrap_or(Duration::ZERO);
        Ok(UploadAuthorization {
            upload_url: self.upload_url.clone(),
            upload_form_data: policy.form_fields(creds.secret_access_key()),
            authorization_expires_at: unix_ms(expires_at - skew_margin(lifetime)),
            max_upload_size: max_size as i64,
            download_url: self.settings.download.url(&key),
        })
    }

    async fn download_url(&self, key: &str) -> Result<String, AttachmentsError> {
        let bucket = &self.settings.bucket;
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .instrument(s3_span("HeadObject"))
            .await
        {
            Ok(_) => {}
            Err(SdkError::ServiceError(se)) if se.err().is_not_found() || se.raw().status().as_u16() == 404 => {
                return Err(AttachmentsError::NotFound("no such attachment".into()));
            }
            Err(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), key, "S3 HeadObject failed");
                return Err(AttachmentsError::Unavailable(
                    "the attachment store is unavailable, retry later".into(),
                ));
            }
        }
        let presigned = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .presigned(PresigningConfig::expires_in(DOWNLOAD_URL_TTL).expect("valid duration"))
            .instrument(s3_span("presign GetObject"))
            .await
            .map_err(|e| {
                tracing::warn!(error = %DisplayErrorContext(&e), key, "presigning GET failed");
                AttachmentsError::Unavailable("the attachment store is unavailable, retry later".into())
            })?;
        Ok(presigned.uri().to_string())
    }

    fn available(&self) -> bool {
        true
    }
}

/// How much earlier than the policy's real expiry authorizationExpiresAt is reported, to absorb
/// clock skew: a tenth of the lifetime, at most 5 minutes.
pub fn skew_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(300))
}

/// The bucket URL of a presigned GET of key `k`: without the query and the final `/k`.
pub fn upload_url_from_presigned(uri: &str) -> Option<String> {
    let mut u = url::Url::parse(uri).ok()?;
    u.set_query(None);
    u.set_fragment(None);
    let path = u.path().strip_suffix("/k")?.to_string();
    u.set_path(&path);
    Some(u.to_string())
}

/// The rules to write so that the bucket has exactly one tassis rule expiring every object after
/// `days`, other rules untouched; None when that rule is already there as it should be.
pub fn merge_lifecycle(existing: Vec<LifecycleRule>, days: i32) -> Option<Vec<LifecycleRule>> {
    let ours = lifecycle_rule(days);
    let mut rules: Vec<LifecycleRule> = Vec::with_capacity(existing.len() + 1);
    let mut already = false;
    for r in existing {
        if r.id() == Some(LIFECYCLE_RULE_ID) {
            already |= r.status() == &ExpirationStatus::Enabled
                && r.expiration().and_then(|e| e.days()) == Some(days)
                && r.filter().and_then(|f| f.prefix()) == Some("");
        } else {
            rules.push(r);
        }
    }
    if already {
        return None;
    }
    rules.push(ours);
    Some(rules)
}

/// The tassis rule: every object of the bucket expires `days` after upload.
fn lifecycle_rule(days: i32) -> LifecycleRule {
    LifecycleRule::builder()
        .id(LIFECYCLE_RULE_ID)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .expiration(LifecycleExpiration::builder().days(days).build())
        .build()
        .expect("id, status are set")
}

/// What an S3 call's failure was: the service's error code and message, or the transport error.
fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            format!(
                "{} ({})",
                err.code().unwrap_or("unknown error"),
                err.message().unwrap_or("no message")
            )
        }
        other => error_chain(other),
    }
}

/// An error and its sources, each once, as `a: b: c` (SDK errors' Debug forms are unreadable).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Credentials from the AWS chain, kept until they near expiry (the chain's providers themselves
/// do not cache: web identity would call STS, instance metadata IMDS, for every authorization).
struct CredentialCache {
    provider: SharedCredentialsProvider,
    current: tokio::sync::Mutex<Option<(Credentials, Instant)>>,
}

impl CredentialCache {
    fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            current: tokio::sync::Mutex::new(None),
        }
    }

    async fn get(&self) -> Result<Credentials, AttachmentsError> {
        let mut current = self.current.lock().await;
        let now = SystemTime::now();
        if let Some((creds, fetched)) = &*current {
            let fresh = match creds.expiry() {
                None => true,
                // Near expiry, ask again, but at most once a minute in case the provider keeps
                // handing out the same short-lived credentials.
                Some(exp) => {
                    exp > now + CREDENTIALS_REFRESH_BEFORE
                        || (exp > now + Duration::from_secs(60) && fetched.elapsed() < Duration::from_secs(60))
                }
            };
            if fresh {
                return Ok(creds.clone());
            }
        }
        match self.provider.provide_credentials().await {
            Ok(creds) => {
                *current = Some((creds.clone(), Instant::now()));
                Ok(creds)
            }
            Err(e) => {
                tracing::warn!(error = %DisplayErrorContext(&e), "loading AWS credentials failed");
                match &*current {
                    Some((creds, _)) if creds.expiry().is_none_or(|exp| exp > now + Duration::from_secs(60)) => {
                        Ok(creds.clone())
                    }
                    _ => Err(AttachmentsError::Unavailable(
                        "the attachment store's credentials are unavailable, retry later".into(),
                    )),
                }
            }
        }
    }
}

/// Builds the signer the configuration asks for: S3 when a bucket is set (checked now), otherwise
/// [`crate::NoObjectStore`]. `default_public_url` is the gateway's own URL in standalone.
pub async fn signer(
    config: &crate::AttachmentsConfig,
    default_public_url: Option<&str>,
) -> Result<Arc<dyn UploadSigner>, AttachmentsError> {
    match config.s3(default_public_url)? {
        Some(settings) => Ok(Arc::new(S3Store::connect(settings).await?)),
        None => Ok(Arc::new(crate::NoObjectStore)),
    }
}

/// A client span for one S3 call (no keys or bucket contents in it).
fn s3_span(method: &'static str) -> tracing::Span {
    tracing::info_span!(
        "s3",
        otel.name = %format!("s3 {method}"),
        otel.kind = "client",
        rpc.system = "aws-api",
        rpc.service = "S3",
        rpc.method = method,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins() {
        assert_eq!(skew_margin(Duration::from_secs(86_400)), Duration::from_secs(300));
        assert_eq!(skew_margin(Duration::from_secs(600)), Duration::from_secs(60));
        assert_eq!(skew_margin(Duration::from_secs(2)), Duration::from_millis(200));
        assert_eq!(skew_margin(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn upload_urls() {
        assert_eq!(
            upload_url_from_presigned(
                "https://b.s3.eu-west-1.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab"
            )
            .as_deref(),
            Some("https://b.s3.eu-west-1.amazonaws.com/")
        );
        assert_eq!(
            upload_url_from_presigned("http://127.0.0.1:9000/b/k?X-Amz-Signature=ab").as_deref(),
            Some("http://127.0.0.1:9000/b")
        );
        assert_eq!(upload_url_from_presigned("http://127.0.0.1:9000/b/other?x"), None);
    }

    fn rule(id: &str, days: i32) -> LifecycleRule {
        LifecycleRule::builder()
            .id(id)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix("").build())
            .expiration(LifecycleExpiration::builder().days(days).build())
            .build()
            .unwrap()
    }

    #[test]
    fn lifecycle_merge_keeps_other_rules() {
        let got = merge_lifecycle(vec![], 30).unwrap();
        assert_eq!(got, vec![rule(LIFECYCLE_RULE_ID, 30)]);
        let other = rule("logs", 7);
        let got = merge_lifecycle(vec![other.clone(), rule(LIFECYCLE_RULE_ID, 10)], 30).unwrap();
        assert_eq!(got, vec![other.clone(), rule(LIFECYCLE_RULE_ID, 30)]);
        assert_eq!(merge_lifecycle(vec![other, rule(LIFECYCLE_RULE_ID, 30)], 30), None);
    }
}
