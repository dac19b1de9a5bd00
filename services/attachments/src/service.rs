//! The attachments gRPC face: validates numRequested first (`INVALID_ARGUMENT`), then asks the
//! signer (which may answer `UNAVAILABLE`), as the protocol orders those checks. Download links:
//! a key that is not an attachment key is `NOT_FOUND` without asking the store.

use std::sync::Arc;

use tassis_proto::attachments_v1::{
    AttachmentsConfiguration, DownloadUrlRequest, DownloadUrlResponse, GetConfigurationRequest,
    RequestUploadAuthorizationsRequest,
    attachments_server::{Attachments, AttachmentsServer},
};
use tassis_proto::tassis::UploadAuthorizations;
use tassis_runtime::Shutdown;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::{AttachmentsConfig, AttachmentsError, UploadSigner};

/// The attachments gRPC service.
#[derive(Clone)]
pub struct AttachmentsService {
    /// Signs upload authorizations.
    signer: Arc<dyn UploadSigner>,
    /// Limits.
    config: Arc<AttachmentsConfig>,
}

impl AttachmentsService {
    pub fn new(signer: Arc<dyn UploadSigner>, config: AttachmentsConfig) -> Self {
        Self {
            signer,
            config: Arc::new(config),
        }
    }

    pub fn into_server(self) -> AttachmentsServer<Self> {
        AttachmentsServer::new(self)
    }
}

#[tonic::async_trait]
impl Attachments for AttachmentsService {
    async fn get_configuration(
        &self,
        _req: Request<GetConfigurationRequest>,
    ) -> Result<Response<AttachmentsConfiguration>, Status> {
        Ok(Response::new(AttachmentsConfiguration {
            max_attachment_size: self.config.max_attachment_size as i64,
            max_authorizations_per_request: self.config.max_upload_authorizations,
            available: self.signer.available(),
        }))
    }

    async fn request_upload_authorizations(
        &self,
        req: Request<RequestUploadAuthorizationsRequest>,
    ) -> Result<Response<UploadAuthorizations>, Status> {
        let n = req.into_inner().num_requested;
        if n < 1 {
            return Err(AttachmentsError::InvalidRequest(format!("numRequested must be at least 1, got {n}")).into());
        }
        let n = (n as u32).min(self.config.max_upload_authorizations);
        let mut authorizations = Vec::with_capacity(n as usize);
        for _ in 0..n {
            authorizations.push(self.signer.authorize(self.config.max_attachment_size).await?);
        }
        Ok(Response::new(UploadAuthorizations { authorizations }))
    }

    async fn download_url(&self, req: Request<DownloadUrlRequest>) -> Result<Response<DownloadUrlResponse>, Status> {
        let key = req.into_inner().key;
        if !crate::post_policy::is_object_key(&key) {
            return Err(AttachmentsError::NotFound("no such attachment".into()).into());
        }
        let url = self.signer.download_url(&key).await?;
        Ok(Response::new(DownloadUrlResponse { url }))
    }
}

/// Serves the attachments gRPC API on `listener` until `shutdown`.
pub async fn serve(
    service: AttachmentsService,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .trace_fn(tassis_runtime::telemetry::grpc_server_span)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.wait_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoObjectStore;
    use tassis_proto::tassis::UploadAuthorization;

    /// A signer that counts calls, to check the cap without an object store.
    struct Counting(std::sync::atomic::AtomicU32);

    #[async_trait::async_trait]
    impl UploadSigner for Counting {
        async fn authorize(&self, max_size: u64) -> Result<UploadAuthorization, AttachmentsError> {
            let i = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(UploadAuthorization {
                upload_url: format!("u{i}"),
                max_upload_size: max_size as i64,
                ..Default::default()
            })
        }
        fn available(&self) -> bool {
            true
        }
    }

    fn req(n: i32) -> Request<RequestUploadAuthorizationsRequest> {
        Request::new(RequestUploadAuthorizationsRequest { num_requested: n })
    }

    #[tokio::test]
    async fn validates_before_availability() {
        let s = AttachmentsService::new(Arc::new(NoObjectStore), AttachmentsConfig::default());
        assert_eq!(
            s.request_upload_authorizations(req(0)).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            s.request_upload_authorizations(req(-5)).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let e = s.request_upload_authorizations(req(1)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.message().contains("S3 bucket"), "{}", e.message());
    }

    fn dl(key: &str) -> Request<DownloadUrlRequest> {
        Request::new(DownloadUrlRequest { key: key.into() })
    }

    #[tokio::test]
    async fn download_urls_check_the_key_first() {
        let s = AttachmentsService::new(Arc::new(NoObjectStore), AttachmentsConfig::default());
        for bad in ["", "x", "../etc/passwd", "20250101/not-a-uuid"] {
            assert_eq!(
                s.download_url(dl(bad)).await.unwrap_err().code(),
                tonic::Code::NotFound,
                "{bad}"
            );
        }
        let key = crate::post_policy::object_key(std::time::SystemTime::now());
        assert_eq!(
            s.download_url(dl(&key)).await.unwrap_err().code(),
            tonic::Code::Unavailable
        );
    }

    #[tokio::test]
    async fn caps_num_requested() {
        let cfg = AttachmentsConfig {
            max_upload_authorizations: 3,
            max_attachment_size: 1234,
            ..Default::default()
        };
        let s = AttachmentsService::new(Arc::new(Counting(Default::default())), cfg);
        let got = s
            .request_upload_authorizations(req(i32::MAX))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.authorizations.len(), 3);
        assert!(got.authorizations.iter().all(|a| a.max_upload_size == 1234));
        let got = s.request_upload_authorizations(req(2)).await.unwrap().into_inner();
        assert_eq!(got.authorizations.len(), 2);
        let c = s
            .get_configuration(Request::new(GetConfigurationRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(c.max_attachment_size, 1234);
        assert!(c.available);
    }
}
