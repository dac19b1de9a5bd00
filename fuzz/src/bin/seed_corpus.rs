//! Writes the seed corpus of both fuzz targets into fuzz/corpus/<target>/: one frame of every
//! payload kind (valid, and a few invalid ones), and valid signed logins of both schemes. Run it
//! again when the protocol changes: `scripts/fuzz.sh corpus`.

use std::path::Path;

use bytes::Bytes;
use prost::Message as _;
use tassis_client::{Identity, Scheme, frame};
use tassis_proto::tassis::message::Payload;
use tassis_proto::tassis::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let id = Identity::from_secret(Scheme::Ed25519, [1; 32]);
    let addr = Address {
        identity_key: Bytes::copy_from_slice(&id.public_key()),
        device_id: Bytes::from_static(b"phone"),
    };
    let frames: Vec<(&str, Option<Payload>)> = vec![
        (
            "auth_response",
            Some(Payload::AuthResponse(frame::auth_response(&id, b"phone", &[9; 32]))),
        ),
        (
            "register",
            Some(Payload::Register(Register {
                signed_pre_key: Bytes::from_static(b"spk"),
                one_time_pre_keys: vec![Bytes::from_static(b"otk1"), Bytes::from_static(b"otk2")],
            })),
        ),
        ("unregister", Some(Payload::Unregister(Unregister {}))),
        (
            "request_pre_keys",
            Some(Payload::RequestPreKeys(RequestPreKeys {
                identity_key: addr.identity_key.clone(),
                known_device_ids: vec![Bytes::from_static(b"laptop")],
            })),
        ),
        (
            "request_pre_keys_short_key",
            Some(Payload::RequestPreKeys(RequestPreKeys {
                identity_key: Bytes::from_static(&[1; 31]),
                known_device_ids: vec![],
            })),
        ),
        (
            "send_1k",
            Some(Payload::OutboundMessage(OutboundMessage {
                to: Some(addr.clone()),
                unidentified_sender_message: Bytes::from(vec![0xab; 1024]),
            })),
        ),
        (
            "send_no_address",
            Some(Payload::OutboundMessage(OutboundMessage {
                to: None,
                unidentified_sender_message: Bytes::from_static(b"x"),
            })),
        ),
        (
            "uploads",
            Some(Payload::RequestUploadAuthorizations(RequestUploadAuthorizations {
                num_requested: 3,
            })),
        ),
        (
            "uploads_negative",
            Some(Payload::RequestUploadAuthorizations(RequestUploadAuthorizations {
                num_requested: -1,
            })),
        ),
        ("ack", Some(Payload::Ack(Ack {}))),
        (
            "error_server_only",
            Some(Payload::Error(Error {
                name: "x".into(),
                description: "y".into(),
            })),
        ),
        (
            "inbound_server_only",
            Some(Payload::InboundMessage(Bytes::from_static(b"sealed"))),
        ),
        (
            "send_long_device",
            Some(Payload::OutboundMessage(OutboundMessage {
                to: Some(Address {
                    device_id: Bytes::from(vec![b'd'; 65]),
                    ..addr.clone()
                }),
                unidentified_sender_message: Bytes::from_static(b"x"),
            })),
        ),
        ("no_payload", None),
    ];
    for (i, (name, payload)) in frames.into_iter().enumerate() {
        let m = Message {
            sequence: i as u32 + 1,
            payload,
        };
        write(&root.join("frame_dispatch"), name, &m.encode_to_vec());
    }
    for (scheme, tag) in [(Scheme::Ed25519, 0u8), (Scheme::Curve25519, 1u8)] {
        let secret = [7 + tag; 32];
        let id = Identity::from_secret(scheme, secret);
        let nonce = [3u8; 32];
        let r = frame::auth_response(&id, b"phone", &nonce);
        // raw mode: 0 ‖ nonce ‖ signature ‖ login
        let raw = [&[0u8][..], &nonce, &r.signature, &r.login].concat();
        write(&root.join("login_verify"), &format!("raw_{}", scheme.as_str()), &raw);
        // mutated mode: 1 ‖ secret ‖ scheme ‖ device byte ‖ no flips / one flip
        let base = [&[1u8][..], &secret, &[tag, b'1']].concat();
        write(&root.join("login_verify"), &format!("valid_{}", scheme.as_str()), &base);
        let flipped = [&base[..], &[70, 0, 1]].concat();
        write(
            &root.join("login_verify"),
            &format!("flip_{}", scheme.as_str()),
            &flipped,
        );
    }
    // forge mode: 2 ‖ identity key ‖ signature (R ‖ S) ‖ device id. Classic forgeries against lax
    // verifiers: small-order keys with a small-order R and S = 0; XEdDSA keys u = 0, 1 and -1.
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    let order8: [u8; 32] = [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f, 0x2a, 0x20,
        0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a,
    ];
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    let forgeries: [(&str, [u8; 32], [u8; 32]); 5] = [
        ("identity", identity_point, identity_point),
        ("order8", order8, order8),
        ("u0", [0; 32], [0; 32]),
        ("u1", identity_point, identity_point),
        ("u_minus_one", minus_one, [0; 32]),
    ];
    for (name, key, r) in forgeries {
        for (suffix, sign) in [("", 0u8), ("_sign", 0x80)] {
            let mut s = [0u8; 32];
            s[31] = sign;
            let seed = [&[2u8][..], &key, &r, &s, b"phone"].concat();
            write(&root.join("login_verify"), &format!("forge_{name}{suffix}"), &seed);
        }
    }
    println!("seed corpus written to {}", root.display());
}
