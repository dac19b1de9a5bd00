//! Login verification (`auth::verify_login`, Ed25519 and XEdDSA), three ways, chosen by the first
//! byte (mod 3):
//! - raw: arbitrary nonce, signature and login bytes (and the login's own nonce, to get past the
//!   nonce check into signature verification); must never panic, and whatever it accepts is a
//!   login for exactly that nonce whose address it returns (the seeds include valid logins);
//! - mutated: a valid login signed by a key derived from the input (either scheme), then bytes of
//!   login, signature and nonce flipped where the input says; it verifies if and only if nothing
//!   was changed;
//! - forge: a well-formed login for an input-chosen identity key and device id, with an
//!   input-chosen signature; it is refused as `BadSignature`, whatever the key (the seeds are the
//!   classic forgeries against lax verifiers: small-order keys and R, S = 0, u = 0, 1, -1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tassis_client::{Identity, Scheme, frame};
use tassis_gateway::auth::{AuthError, Schemes, verify_login};
use tassis_proto::tassis::{Address, Login};

const BOTH: Schemes = Schemes {
    ed25519: true,
    xeddsa: true,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => raw(data),
        1 => mutated(data),
        _ => forge(data),
    }
});

fn raw(data: &[u8]) {
    if data.len() < 96 {
        return;
    }
    let nonce: [u8; 32] = data[..32].try_into().unwrap();
    let (sig, login) = (&data[32..96], &data[96..]);
    check_accepted(login, sig, &nonce);
    if let Ok(l) = Login::decode(login)
        && let Ok(own) = <[u8; 32]>::try_from(l.nonce.as_ref())
    {
        check_accepted(login, sig, &own);
    }
}

/// An accepted login names this nonce and the address returned, and verifies the same again.
fn check_accepted(login: &[u8], sig: &[u8], nonce: &[u8; 32]) {
    let Ok(addr) = verify_login(login, sig, nonce, BOTH) else {
        return;
    };
    let l = Login::decode(login).expect("an accepted login decodes");
    assert_eq!(l.nonce.as_ref(), nonce);
    assert_eq!(l.address.as_ref(), Some(&addr));
    assert_eq!(verify_login(login, sig, nonce, BOTH), Ok(addr));
}

fn mutated(data: &[u8]) {
    if data.len() < 34 {
        return;
    }
    let secret: [u8; 32] = data[..32].try_into().unwrap();
    let scheme = if data[32] & 1 == 0 {
        Scheme::Ed25519
    } else {
        Scheme::Curve25519
    };
    let device = [b'd', data[33]];
    let id = Identity::from_secret(scheme, secret);
    let nonce = [0x5a; 32];
    let resp = frame::auth_response(&id, &device, &nonce);
    let (login, sig) = (resp.login.to_vec(), resp.signature.to_vec());
    let addr = verify_login(&login, &sig, &nonce, BOTH).expect("a valid login verifies");
    assert_eq!(addr.identity_key.as_ref(), id.public_key());

    // Flips: (position, xor) pairs over login ‖ signature ‖ nonce.
    let mut all = [login.as_slice(), sig.as_slice(), nonce.as_slice()].concat();
    for pair in data[34..].chunks_exact(3) {
        let pos = u16::from_le_bytes([pair[0], pair[1]]) as usize % all.len();
        all[pos] ^= pair[2];
    }
    let changed = all != [login.as_slice(), sig.as_slice(), nonce.as_slice()].concat();
    let (l2, rest) = all.split_at(login.len());
    let (s2, n2) = rest.split_at(64);
    let n2: [u8; 32] = n2.try_into().unwrap();
    let verdict = verify_login(l2, s2, &n2, BOTH);
    assert_eq!(verdict.is_ok(), !changed, "changed: {changed}, verdict: {verdict:?}");
    // A scheme switched off never verifies.
    let only_other = match scheme {
        Scheme::Ed25519 => Schemes {
            ed25519: false,
            xeddsa: true,
        },
        Scheme::Curve25519 => Schemes {
            ed25519: true,
            xeddsa: false,
        },
    };
    assert!(verify_login(&login, &sig, &nonce, only_other).is_err());
}

fn forge(data: &[u8]) {
    if data.len() < 97 {
        return;
    }
    let (key, rest) = data.split_at(32);
    let (sig, device) = rest.split_at(64);
    let device = &device[..device.len().min(64)];
    let nonce = [0x5a; 32];
    let login = Login {
        address: Some(Address {
            identity_key: bytes::Bytes::copy_from_slice(key),
            device_id: bytes::Bytes::copy_from_slice(device),
        }),
        nonce: bytes::Bytes::copy_from_slice(&nonce),
    }
    .encode_to_vec();
    assert_eq!(
        verify_login(&login, sig, &nonce, BOTH),
        Err(AuthError::BadSignature),
        "key {key:02x?} sig {sig:02x?}"
    );
}
