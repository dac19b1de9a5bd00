//! The keystore's limits. Every one is explicit, configurable and documented in the README.

use tassis_runtime::config::ensure;

/// Keystore limits (flags with `TASSIS_*` env twins).
#[derive(Clone, Debug, clap::Args)]
pub struct KeystoreConfig {
    /// Devices one identity may have registered at once.
    #[arg(long, env = "TASSIS_MAX_DEVICES_PER_IDENTITY", default_value_t = 32)]
    pub max_devices_per_identity: u32,

    /// One-time prekeys one device may hold.
    #[arg(long, env = "TASSIS_MAX_ONE_TIME_KEYS_PER_DEVICE", default_value_t = 1000)]
    pub max_one_time_keys_per_device: u32,

    /// One-time prekeys one Register may carry.
    #[arg(long, env = "TASSIS_MAX_ONE_TIME_KEYS_PER_REGISTER", default_value_t = 500)]
    pub max_one_time_keys_per_register: u32,

    /// Largest signed or one-time prekey accepted, in bytes.
    #[arg(long, env = "TASSIS_MAX_PREKEY_SIZE", default_value_t = 1024)]
    pub max_prekey_size: u32,
}

impl Default for KeystoreConfig {
    fn default() -> Self {
        Self {
            max_devices_per_identity: 32,
            max_one_time_keys_per_device: 1000,
            max_one_time_keys_per_register: 500,
            max_prekey_size: 1024,
        }
    }
}

impl KeystoreConfig {
    pub fn validate(&self) -> Result<(), tassis_runtime::RuntimeError> {
        ensure(self.max_devices_per_identity >= 1, || {
            "--max-devices-per-identity must be at least 1".into()
        })?;
        ensure(self.max_one_time_keys_per_register >= 1, || {
            "--max-one-time-keys-per-register must be at least 1".into()
        })?;
        ensure(
            self.max_one_time_keys_per_device >= self.max_one_time_keys_per_register,
            || "--max-one-time-keys-per-device must be at least --max-one-time-keys-per-register".into(),
        )?;
        ensure(self.max_prekey_size >= 32, || {
            "--max-prekey-size must be at least 32 bytes".into()
        })
    }
}
