//! The keystore's Prometheus series and [`Instrumented`], the [`KeyBackend`] wrapper that times
//! every backend call (`tassis_keystore_backend_seconds{op}`) and runs it in a span
//! (`<backend> <op>`, e.g. `redis request_pre_keys`). Spans carry no keys or addresses.

use std::sync::Arc;

use bytes::Bytes;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::backend::{PreKeyBundle, RegisterLimits};
use crate::{DeviceStatus, KeyBackend, KeystoreError, RegisterOutcome};

/// Series of one keystore service.
pub struct Metrics {
    /// Backend call latency by operation.
    pub backend_seconds: HistogramVec,
    /// Backend calls that failed (storage errors), by operation.
    pub backend_errors: IntCounterVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Arc<Self> {
        let m = Self {
            backend_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "tassis_keystore_backend_seconds",
                    "Key backend call latency by operation",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["op"],
            )
            .expect("valid metric"),
            backend_errors: IntCounterVec::new(
                Opts::new(
                    "tassis_keystore_backend_errors_total",
                    "Key backend calls that failed, by operation",
                ),
                &["op"],
            )
            .expect("valid metric"),
        };
        let _ = registry.register(Box::new(m.backend_seconds.clone()));
        let _ = registry.register(Box::new(m.backend_errors.clone()));
        Arc::new(m)
    }
}

/// A timed, traced [`KeyBackend`].
pub struct Instrumented {
    inner: Arc<dyn KeyBackend>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn KeyBackend>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn call<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, KeystoreError>>,
    ) -> Result<T, KeystoreError> {
        tassis_runtime::telemetry::backend_call(
            self.inner.kind(),
            op,
            &self.metrics.backend_seconds,
            &self.metrics.backend_errors,
            |e| matches!(e, KeystoreError::Unavailable(_)),
            f,
        )
        .await
    }
}

#[async_trait::async_trait]
impl KeyBackend for Instrumented {
    async fn register(
        &self,
        identity_key: &Bytes,
        device_id: &Bytes,
        signed_pre_key: Bytes,
        one_time_pre_keys: Vec<Bytes>,
        limits: RegisterLimits,
    ) -> Result<RegisterOutcome, KeystoreError> {
        let f = self
            .inner
            .register(identity_key, device_id, signed_pre_key, one_time_pre_keys, limits);
        self.call("register", f).await
    }

    async fn unregister(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<bool, KeystoreError> {
        self.call("unregister", self.inner.unregister(identity_key, device_id))
            .await
    }

    async fn request_pre_keys(
        &self,
        identity_key: &Bytes,
        known_device_ids: &[Bytes],
    ) -> Result<Vec<PreKeyBundle>, KeystoreError> {
        self.call(
            "request_pre_keys",
            self.inner.request_pre_keys(identity_key, known_device_ids),
        )
        .await
    }

    async fn device_status(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<DeviceStatus, KeystoreError> {
        self.call("device_status", self.inner.device_status(identity_key, device_id))
            .await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}
