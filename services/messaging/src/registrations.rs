//! "Is this device registered?" — the check every enqueue makes. The Redis backend makes it inside
//! its enqueue script (registrations and queues share a hash tag); the embedded backend asks an
//! implementation of [`Registrations`]: the in-process key store in `standalone`, or the keystore
//! service over gRPC when messaging runs as its own process without Redis.

use tassis_proto::keystore_v1::{DeviceStatusRequest, key_store_client::KeyStoreClient};
use tassis_proto::tassis::Address;
use tonic::transport::Channel;

use crate::{DeviceAddress, MessagingError};

#[async_trait::async_trait]
pub trait Registrations: Send + Sync + 'static {
    async fn is_registered(&self, device: &DeviceAddress) -> Result<bool, MessagingError>;
}

/// Asks the keystore service.
#[derive(Clone)]
pub struct KeystoreRegistrations {
    /// A lazily connected channel to the keystore.
    client: KeyStoreClient<Channel>,
}

impl KeystoreRegistrations {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: KeyStoreClient::new(channel),
        }
    }
}

#[async_trait::async_trait]
impl Registrations for KeystoreRegistrations {
    async fn is_registered(&self, device: &DeviceAddress) -> Result<bool, MessagingError> {
        let reply = self
            .client
            .clone()
            .device_status(DeviceStatusRequest {
                address: Some(Address {
                    identity_key: device.identity_key.clone(),
                    device_id: device.device_id.clone(),
                }),
            })
            .await
            .map_err(|s| MessagingError::Unavailable(format!("keystore: {}", s.message())))?;
        Ok(reply.into_inner().registered)
    }
}
