//! Login verification: the challenge–response that binds a connection to a device address.
//!
//! A client signs the serialized `Login{address, nonce}` with its identity key; the signature
//! covers the login bytes exactly as sent. Two schemes share the 32-byte identity key slot:
//! - Ed25519: the key is an Ed25519 public key, verified with `verify_strict`.
//! - XEdDSA (libsignal `calculateSignature`): the key is an X25519 Montgomery u-coordinate. We
//!   clear u's top bit, refuse non-canonical u and u = -1, convert to the Edwards point
//!   y = (u-1)/(u+1) taking the sign from bit 7 of signature byte 63, clear that bit, and verify
//!   strictly (canonical R and S, no small-order keys) as Ed25519.

use bytes::Bytes;
use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message as _;
use subtle::ConstantTimeEq;
use tassis_proto::tassis::{Address, Login};

/// Which signature schemes are accepted.
#[derive(Clone, Copy, Debug)]
pub struct Schemes {
    /// Accept Ed25519 identity keys (the documented scheme).
    pub ed25519: bool,
    /// Accept Signal-style X25519 identity keys with XEdDSA signatures.
    pub xeddsa: bool,
}

/// Why a login was refused. All of them are reported to the client as `unauthorized`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("login is not a valid Login message")]
    Malformed,
    #[error("login has no address")]
    NoAddress,
    #[error("nonce does not match this connection's challenge")]
    WrongNonce,
    #[error("identityKey must be 32 bytes")]
    BadIdentityKey,
    #[error("deviceId must be 1..=64 bytes")]
    BadDeviceId,
    #[error("signature must be 64 bytes")]
    BadSignatureLength,
    #[error("signature does not verify")]
    BadSignature,
}

/// Verifies an AuthResponse against this connection's challenge nonce and returns the address.
pub fn verify_login(login: &[u8], signature: &[u8], nonce: &[u8; 32], schemes: Schemes) -> Result<Address, AuthError> {
    let parsed = Login::decode(login).map_err(|_| AuthError::Malformed)?;
    let address = parsed.address.ok_or(AuthError::NoAddress)?;
    if !bool::from(parsed.nonce.as_ref().ct_eq(nonce.as_slice())) {
        return Err(AuthError::WrongNonce);
    }
    let key: [u8; 32] = address
        .identity_key
        .as_ref()
        .try_into()
        .map_err(|_| AuthError::BadIdentityKey)?;
    if address.device_id.is_empty() || address.device_id.len() > tassis_proto::address::MAX_DEVICE_ID_LEN {
        return Err(AuthError::BadDeviceId);
    }
    let sig: [u8; 64] = signature.try_into().map_err(|_| AuthError::BadSignatureLength)?;
    let ok =
        (schemes.ed25519 && verify_ed25519(&key, login, &sig)) || (schemes.xeddsa && verify_xeddsa(&key, login, &sig));
    if ok {
        Ok(Address {
            identity_key: Bytes::copy_from_slice(&key),
            device_id: address.device_id,
        })
    } else {
        Err(AuthError::BadSignature)
    }
}

/// Strict Ed25519 verification.
pub fn verify_ed25519(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    vk.verify_strict(msg, &Signature::from_bytes(sig)).is_ok()
}

/// 2^255 - 19, little-endian.
const P: [u8; 32] = {
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// Whether a little-endian 255-bit value is below p (canonical field element).
fn is_canonical(u: &[u8; 32]) -> bool {
    for i in (0..32).rev() {
        if u[i] != P[i] {
            return u[i] < P[i];
        }
    }
    false
}

/// XEdDSA verification of a libsignal `calculateSignature` signature by an X25519 key.
pub fn verify_xeddsa(u: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    let mut u = *u;
    u[31] &= 0x7f;
    if !is_canonical(&u) {
        return false;
    }
    let sign = sig[63] >> 7;
    // to_edwards refuses u = -1, which has no Edwards point.
    let Some(point) = MontgomeryPoint(u).to_edwards(sign) else {
        return false;
    };
    let vk = VerifyingKey::from(point);
    let mut s = *sig;
    s[63] &= 0x7f;
    vk.verify_strict(msg, &Signature::from_bytes(&s)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    const BOTH: Schemes = Schemes {
        ed25519: true,
        xeddsa: true,
    };

    fn login_bytes(ik: &[u8], dev: &[u8], nonce: &[u8]) -> Vec<u8> {
        Login {
            address: Some(Address {
                identity_key: Bytes::copy_from_slice(ik),
                device_id: Bytes::copy_from_slice(dev),
            }),
            nonce: Bytes::copy_from_slice(nonce),
        }
        .encode_to_vec()
    }

    #[test]
    fn ed25519_login_roundtrip_and_failures() {
        let sk = SigningKey::from_bytes(&[7u8; 32]);
        let ik = sk.verifying_key().to_bytes();
        let nonce = [3u8; 32];
        let login = login_bytes(&ik, b"phone", &nonce);
        let sig = sk.sign(&login).to_bytes();
        let addr = verify_login(&login, &sig, &nonce, BOTH).unwrap();
        assert_eq!(addr.identity_key.as_ref(), ik);
        assert_eq!(addr.device_id.as_ref(), b"phone");
        // Wrong nonce, bad signature, scheme off.
        assert_eq!(verify_login(&login, &sig, &[4u8; 32], BOTH), Err(AuthError::WrongNonce));
        let mut bad = sig;
        bad[5] ^= 1;
        assert_eq!(verify_login(&login, &bad, &nonce, BOTH), Err(AuthError::BadSignature));
        let only_x = Schemes {
            ed25519: false,
            xeddsa: true,
        };
        assert_eq!(verify_login(&login, &sig, &nonce, only_x), Err(AuthError::BadSignature));
        assert_eq!(
            verify_login(&login, &sig[..63], &nonce, BOTH),
            Err(AuthError::BadSignatureLength)
        );
        assert_eq!(verify_login(b"\xff\xff", &sig, &nonce, BOTH), Err(AuthError::Malformed));
        let no_dev = login_bytes(&ik, b"", &nonce);
        assert_eq!(
            verify_login(&no_dev, &sk.sign(&no_dev).to_bytes(), &nonce, BOTH),
            Err(AuthError::BadDeviceId)
        );
        let short = login_bytes(&ik[..31], b"d", &nonce);
        assert_eq!(
            verify_login(&short, &sk.sign(&short).to_bytes(), &nonce, BOTH),
            Err(AuthError::BadIdentityKey)
        );
    }

    #[test]
    fn libsignal_vectors_verify_and_bit_flips_fail() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/xeddsa-libsignal.json")).unwrap();
        let vectors = v["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 4);
        for t in vectors {
            let ik: [u8; 32] = hex::decode(t["identityKey"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let msg = hex::decode(t["msg"].as_str().unwrap()).unwrap();
            let sig: [u8; 64] = hex::decode(t["sig"].as_str().unwrap()).unwrap().try_into().unwrap();
            assert!(verify_xeddsa(&ik, &msg, &sig), "vector must verify");
            assert!(!verify_ed25519(&ik, &msg, &sig), "an X25519 key is not an Ed25519 key");
            for bit in [0usize, 100, 255, 256, 300, 511] {
                let mut s = sig;
                s[bit / 8] ^= 1 << (bit % 8);
                assert!(!verify_xeddsa(&ik, &msg, &s), "flipped sig bit {bit} must fail");
            }
            let mut m = msg.clone();
            m[0] ^= 1;
            assert!(!verify_xeddsa(&ik, &m, &sig));
        }
    }

    #[test]
    fn xeddsa_rejects_minus_one_and_noncanonical_u() {
        let mut minus_one = P;
        minus_one[0] -= 1;
        assert!(!verify_xeddsa(&minus_one, b"m", &[0u8; 64]));
        assert!(!is_canonical(&P));
        assert!(is_canonical(&minus_one));
    }
}
