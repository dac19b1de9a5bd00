//! The keystore's gRPC face: validates requests against the configured limits, then calls the
//! backend. Validation lives here, not in backends, so every backend gets identical rules.

use std::sync::Arc;

use bytes::Bytes;
use tassis_proto::keystore_v1::{
    DeviceStatusReply, DeviceStatusRequest, RegisterReply, RegisterRequest, RequestPreKeysReply, RequestPreKeysRequest,
    UnregisterReply, UnregisterRequest,
    key_store_server::{KeyStore, KeyStoreServer},
};
use tassis_proto::tassis::{Address, PreKey};
use tassis_runtime::Shutdown;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::backend::RegisterLimits;
use crate::metrics::{Instrumented, Metrics};
use crate::{KeyBackend, KeystoreConfig, KeystoreError};

#[derive(Clone)]
pub struct KeystoreService {
    /// Where registrations live, wrapped in [`Instrumented`] (timed, traced).
    backend: Arc<dyn KeyBackend>,
    /// The backend as given, to re-wrap with other metrics.
    raw: Arc<dyn KeyBackend>,
    /// Limits applied to every request.
    config: Arc<KeystoreConfig>,
}

impl KeystoreService {
    /// A service whose metrics are not exported (see [`KeystoreService::with_metrics`]).
    pub fn new(backend: Arc<dyn KeyBackend>, config: KeystoreConfig) -> Self {
        let metrics = Metrics::new(&prometheus::Registry::new());
        Self {
            backend: Arc::new(Instrumented::new(backend.clone(), metrics)),
            raw: backend,
            config: Arc::new(config),
        }
    }

    /// Registers the service's series (`tassis_keystore_*`) in `registry`.
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> Self {
        self.backend = Arc::new(Instrumented::new(self.raw.clone(), Metrics::new(registry)));
        self
    }

    /// The tonic server wrapper, with message size limits sized for a Register.
    pub fn into_server(self) -> KeyStoreServer<Self> {
        KeyStoreServer::new(self)
    }

    fn limits(&self) -> RegisterLimits {
        RegisterLimits {
            max_devices_per_identity: self.config.max_devices_per_identity,
            max_one_time_keys_per_device: self.config.max_one_time_keys_per_device,
        }
    }

    fn check_key(&self, what: &str, key: &Bytes) -> Result<(), KeystoreError> {
        if key.is_empty() || key.len() > self.config.max_prekey_size as usize {
            return Err(KeystoreError::InvalidRequest(format!(
                "{what} must be 1..={} bytes, got {}",
                self.config.max_prekey_size,
                key.len()
            )));
        }
        Ok(())
    }
}

/// Checks an address and returns (identity key, device id).
fn check_address(address: Option<&Address>) -> Result<(&Bytes, &Bytes), KeystoreError> {
    let a = tassis_proto::address::check_address(address).map_err(|e| KeystoreError::InvalidRequest(e.to_string()))?;
    Ok((&a.identity_key, &a.device_id))
}

fn check_identity_key(k: &Bytes) -> Result<(), KeystoreError> {
    tassis_proto::address::check_identity_key(k).map_err(|e| KeystoreError::InvalidRequest(e.to_string()))
}

#[tonic::async_trait]
impl KeyStore for KeystoreService {
    async fn register(&self, req: Request<RegisterRequest>) -> Result<Response<RegisterReply>, Status> {
        let req = req.into_inner();
        let (ik, dev) = check_address(req.address.as_ref())?;
        self.check_key("signedPreKey", &req.signed_pre_key)?;
        let n = req.one_time_pre_keys.len();
        if n > self.config.max_one_time_keys_per_register as usize {
            return Err(KeystoreError::InvalidRequest(format!(
                "{n} one-time prekeys in one Register (limit {})",
                self.config.max_one_time_keys_per_register
            ))
            .into());
        }
        for k in &req.one_time_pre_keys {
            self.check_key("oneTimePreKey", k)?;
        }
        let out = self
            .backend
            .register(
                ik,
                dev,
                req.signed_pre_key.clone(),
                req.one_time_pre_keys.clone(),
                self.limits(),
            )
            .await?;
        tracing::debug!(
            replaced = out.replaced,
            one_time_pre_keys = out.one_time_pre_keys,
            "registered"
        );
        Ok(Response::new(RegisterReply {
            replaced: out.replaced,
            one_time_pre_keys: out.one_time_pre_keys,
        }))
    }

    async fn unregister(&self, req: Request<UnregisterRequest>) -> Result<Response<UnregisterReply>, Status> {
        let req = req.into_inner();
        let (ik, dev) = check_address(req.address.as_ref())?;
        let existed = self.backend.unregister(ik, dev).await?;
        Ok(Response::new(UnregisterReply { existed }))
    }

    async fn request_pre_keys(
        &self,
        req: Request<RequestPreKeysRequest>,
    ) -> Result<Response<RequestPreKeysReply>, Status> {
        let req = req.into_inner();
        check_identity_key(&req.identity_key)?;
        if req.known_device_ids.len() > self.config.max_devices_per_identity as usize * 4 {
            return Err(KeystoreError::InvalidRequest(format!(
                "{} knownDeviceIds is more than any identity can have",
                req.known_device_ids.len()
            ))
            .into());
        }
        let bundles = self
            .backend
            .request_pre_keys(&req.identity_key, &req.known_device_ids)
            .await?;
        Ok(Response::new(RequestPreKeysReply {
            pre_keys: bundles
                .into_iter()
                .map(|b| PreKey {
                    device_id: b.device_id,
                    signed_pre_key: b.signed_pre_key,
                    one_time_pre_key: b.one_time_pre_key,
                })
                .collect(),
        }))
    }

    async fn device_status(&self, req: Request<DeviceStatusRequest>) -> Result<Response<DeviceStatusReply>, Status> {
        let req = req.into_inner();
        let (ik, dev) = check_address(req.address.as_ref())?;
        let s = self.backend.device_status(ik, dev).await?;
        Ok(Response::new(DeviceStatusReply {
            registered: s.registered,
            one_time_pre_keys: s.one_time_pre_keys,
        }))
    }
}

/// Serves the keystore gRPC API on `listener` until `shutdown`, finishing in-flight calls.
pub async fn serve(
    service: KeystoreService,
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
    use crate::MemoryKeyStore;

    fn addr(ik: u8, dev: &[u8]) -> Address {
        Address {
            identity_key: Bytes::from(vec![ik; 32]),
            device_id: Bytes::copy_from_slice(dev),
        }
    }

    fn svc() -> KeystoreService {
        KeystoreService::new(Arc::new(MemoryKeyStore::new()), KeystoreConfig::default())
    }

    fn reg(a: Address, spk: &[u8], otks: &[&[u8]]) -> Request<RegisterRequest> {
        Request::new(RegisterRequest {
            address: Some(a),
            signed_pre_key: Bytes::copy_from_slice(spk),
            one_time_pre_keys: otks.iter().map(|k| Bytes::copy_from_slice(k)).collect(),
        })
    }

    #[tokio::test]
    async fn rejects_bad_addresses_and_keys() {
        let s = svc();
        let mut bad = addr(1, b"d");
        bad.identity_key = Bytes::from_static(b"short");
        assert_eq!(
            s.register(reg(bad, b"spk", &[])).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let long_dev = addr(1, &[7u8; 65]);
        assert_eq!(
            s.register(reg(long_dev, b"spk", &[])).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            s.register(reg(addr(1, b"d"), b"", &[])).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let big = vec![0u8; 2000];
        let e = s.register(reg(addr(1, b"d"), &big, &[])).await.unwrap_err();
        assert!(e.message().contains("signedPreKey"), "{}", e.message());
    }

    #[tokio::test]
    async fn limits_keys_per_register_and_per_device() {
        let cfg = KeystoreConfig {
            max_one_time_keys_per_register: 3,
            max_one_time_keys_per_device: 4,
            ..KeystoreConfig::default()
        };
        let s = KeystoreService::new(Arc::new(MemoryKeyStore::new()), cfg);
        let e = s
            .register(reg(addr(1, b"d"), b"spk", &[b"1", b"2", b"3", b"4"]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        s.register(reg(addr(1, b"d"), b"spk", &[b"1", b"2", b"3"]))
            .await
            .unwrap();
        let e = s.register(reg(addr(1, b"d"), b"spk", &[b"4", b"5"])).await.unwrap_err();
        assert!(e.message().contains("limit 4"), "{}", e.message());
        // The refused Register changed nothing.
        let st = s
            .device_status(Request::new(DeviceStatusRequest {
                address: Some(addr(1, b"d")),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(st.one_time_pre_keys, 3);
    }

    #[tokio::test]
    async fn unknown_identity_is_not_found() {
        let s = svc();
        let e = s
            .request_pre_keys(Request::new(RequestPreKeysRequest {
                identity_key: Bytes::from(vec![9u8; 32]),
                known_device_ids: vec![],
            }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    }
}
