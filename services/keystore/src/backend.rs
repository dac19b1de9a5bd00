//! The storage contract every keystore backend honours. Semantics are fixed here, once, so the
//! embedded store and Redis behave the same and one behaviour suite covers both.

use bytes::Bytes;

use crate::KeystoreError;

/// What a registration did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// A registration with a different signed prekey existed and was replaced.
    pub replaced: bool,
    /// One-time keys stored for the device afterwards.
    pub one_time_pre_keys: u32,
}

/// A device's registration state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DeviceStatus {
    pub registered: bool,
    pub one_time_pre_keys: u32,
}

/// One prekey bundle entry handed out by [`KeyBackend::request_pre_keys`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeyBundle {
    pub device_id: Bytes,
    pub signed_pre_key: Bytes,
    /// Empty when the device has no one-time key left.
    pub one_time_pre_key: Bytes,
}

/// Limits a backend enforces atomically, inside the operation.
#[derive(Clone, Copy, Debug)]
pub struct RegisterLimits {
    /// Devices one identity may have registered at once.
    pub max_devices_per_identity: u32,
    /// One-time keys one device may hold.
    pub max_one_time_keys_per_device: u32,
}

/// Storage of registrations. Every method is atomic for one identity.
#[async_trait::async_trait]
pub trait KeyBackend: Send + Sync + 'static {
    /// If the device's stored signed prekey equals `signed_pre_key`, append `one_time_pre_keys`;
    /// otherwise replace the registration (old one-time keys discarded). Refuses, changing
    /// nothing, when the result would break `limits`.
    async fn register(
        &self,
        identity_key: &Bytes,
        device_id: &Bytes,
        signed_pre_key: Bytes,
        one_time_pre_keys: Vec<Bytes>,
        limits: RegisterLimits,
    ) -> Result<RegisterOutcome, KeystoreError>;

    /// Deletes the registration; returns whether one existed.
    async fn unregister(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<bool, KeystoreError>;

    /// One bundle per registered device of the identity not in `known_device_ids`, sorted by
    /// device id, each consuming the most recently registered one-time key.
    /// [`KeystoreError::UnknownIdentity`] when no device is registered.
    async fn request_pre_keys(
        &self,
        identity_key: &Bytes,
        known_device_ids: &[Bytes],
    ) -> Result<Vec<PreKeyBundle>, KeystoreError>;

    /// Whether the device is registered and its remaining one-time keys.
    async fn device_status(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<DeviceStatus, KeystoreError>;

    /// What stores the registrations (`memory`, `redis`), for spans and metrics.
    fn kind(&self) -> &'static str {
        "custom"
    }
}
