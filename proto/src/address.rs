//! The address rules of the protocol, in one place for the gateway and every service:
//! an identity key is 32 bytes; a device id is 1..=64 bytes.

use crate::tassis::Address;

/// Length of an identity key (an Ed25519 or X25519 public key).
pub const IDENTITY_KEY_LEN: usize = 32;
/// Longest device id.
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// Why an address is not acceptable. The gateway maps `IdentityKey` to `invalid_identity_key` and
/// the others to `invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    Missing,
    IdentityKey(usize),
    DeviceId(usize),
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressError::Missing => write!(f, "address missing"),
            AddressError::IdentityKey(n) => write!(f, "identityKey must be {IDENTITY_KEY_LEN} bytes, got {n}"),
            AddressError::DeviceId(n) => write!(f, "deviceId must be 1..={MAX_DEVICE_ID_LEN} bytes, got {n}"),
        }
    }
}

impl std::error::Error for AddressError {}

/// Checks an identity key's length.
pub fn check_identity_key(k: &[u8]) -> Result<(), AddressError> {
    if k.len() == IDENTITY_KEY_LEN {
        Ok(())
    } else {
        Err(AddressError::IdentityKey(k.len()))
    }
}

/// Checks an optional address and returns it.
pub fn check_address(a: Option<&Address>) -> Result<&Address, AddressError> {
    let a = a.ok_or(AddressError::Missing)?;
    check_identity_key(&a.identity_key)?;
    if a.device_id.is_empty() || a.device_id.len() > MAX_DEVICE_ID_LEN {
        return Err(AddressError::DeviceId(a.device_id.len()));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn rules() {
        let ok = Address {
            identity_key: Bytes::from(vec![1; 32]),
            device_id: Bytes::from_static(b"d"),
        };
        assert!(check_address(Some(&ok)).is_ok());
        assert_eq!(check_address(None), Err(AddressError::Missing));
        let bad_ik = Address {
            identity_key: Bytes::from(vec![1; 33]),
            ..ok.clone()
        };
        assert_eq!(check_address(Some(&bad_ik)), Err(AddressError::IdentityKey(33)));
        let empty_dev = Address {
            device_id: Bytes::new(),
            ..ok.clone()
        };
        assert_eq!(check_address(Some(&empty_dev)), Err(AddressError::DeviceId(0)));
        let long_dev = Address {
            device_id: Bytes::from(vec![1; 65]),
            ..ok.clone()
        };
        assert_eq!(check_address(Some(&long_dev)), Err(AddressError::DeviceId(65)));
        let max_dev = Address {
            device_id: Bytes::from(vec![1; 64]),
            ..ok
        };
        assert!(check_address(Some(&max_dev)).is_ok());
    }
}
