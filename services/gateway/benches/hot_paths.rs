//! Gateway hot paths (`cargo bench -p tassis-gateway`), the CPU work per frame without sockets or
//! backends:
//! - `frame`: protobuf decode and encode of the frames every send and delivery produce (a 1 KiB
//!   OutboundMessage, the 1 KiB InboundMessage delivery, an Ack);
//! - `check` / `from_frame`: the gateway's pure request step ([`ops::check`], and decode + check)
//!   for every client payload kind on the connection kind it belongs to, plus two refusals;
//! - `login`: login verification (`auth::verify_login`) in both schemes, and a refused signature.
//!
//! Results and method: docs/bench-gateway.md.

use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use tassis_client::{Identity, Scheme, frame};
use tassis_gateway::auth::{Schemes, verify_login};
use tassis_gateway::ops;
use tassis_proto::tassis::message::Payload;
use tassis_proto::tassis::{
    Ack, Address, Message, OutboundMessage, Register, RequestPreKeys, RequestUploadAuthorizations, Unregister,
};

const BOTH: Schemes = Schemes {
    ed25519: true,
    xeddsa: true,
};

fn address() -> Address {
    Address {
        identity_key: Bytes::from(vec![1; 32]),
        device_id: Bytes::from_static(b"phone"),
    }
}

fn send_1k() -> Payload {
    Payload::OutboundMessage(OutboundMessage {
        to: Some(address()),
        unidentified_sender_message: Bytes::from(vec![0x5a; 1024]),
    })
}

/// Every client payload kind with the connection kind it is allowed on (`true`: authenticated),
/// and two refusals.
fn requests() -> Vec<(&'static str, Payload, bool)> {
    let login = frame::auth_response(&Identity::from_secret(Scheme::Ed25519, [9; 32]), b"phone", &[3; 32]);
    vec![
        ("login", Payload::AuthResponse(login), false),
        (
            // A top-up after PreKeysLow: the signed prekey and 20 one-time keys.
            "register_20",
            Payload::Register(Register {
                signed_pre_key: Bytes::from(vec![2; 96]),
                one_time_pre_keys: (0..20).map(|i| Bytes::from(vec![i; 32])).collect(),
            }),
            true,
        ),
        ("unregister", Payload::Unregister(Unregister {}), true),
        (
            "request_pre_keys",
            Payload::RequestPreKeys(RequestPreKeys {
                identity_key: Bytes::from(vec![1; 32]),
                known_device_ids: vec![Bytes::from_static(b"laptop")],
            }),
            false,
        ),
        ("send_1k", send_1k(), false),
        (
            "upload_authorizations",
            Payload::RequestUploadAuthorizations(RequestUploadAuthorizations { num_requested: 3 }),
            true,
        ),
        ("ack", Payload::Ack(Ack {}), true),
        ("refused_send_on_authenticated", send_1k(), true),
        (
            "refused_server_only",
            Payload::InboundMessage(Bytes::from_static(b"x")),
            false,
        ),
    ]
}

fn frames(c: &mut Criterion) {
    let frames = [
        ("send_1k", send_1k()),
        ("delivery_1k", Payload::InboundMessage(Bytes::from(vec![0x5a; 1024]))),
        ("ack", Payload::Ack(Ack {})),
    ];
    let mut g = c.benchmark_group("frame");
    for (name, payload) in frames {
        let msg = Message {
            sequence: 123_456,
            payload: Some(payload),
        };
        let bytes = Bytes::from(msg.encode_to_vec());
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| Message::decode(std::hint::black_box(bytes.clone())).unwrap())
        });
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| std::hint::black_box(&msg).encode_to_vec())
        });
    }
    g.finish();
}

fn checks(c: &mut Criterion) {
    let mut g = c.benchmark_group("check");
    g.throughput(Throughput::Elements(1));
    for (name, payload, authenticated) in requests() {
        // The payload's clone (refcounted Bytes, a Vec for Register) is made outside the timing.
        g.bench_function(name, |b| {
            b.iter_batched(
                || Some(payload.clone()),
                |p| ops::check(p, authenticated),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
    let mut g = c.benchmark_group("from_frame");
    g.throughput(Throughput::Elements(1));
    for (name, payload, authenticated) in requests() {
        let bytes = Bytes::from(
            Message {
                sequence: 77,
                payload: Some(payload),
            }
            .encode_to_vec(),
        );
        g.bench_function(name, |b| {
            b.iter(|| ops::from_frame(std::hint::black_box(bytes.clone()), authenticated))
        });
    }
    g.finish();
}

fn login(c: &mut Criterion) {
    let nonce = [3u8; 32];
    let mut g = c.benchmark_group("login");
    g.throughput(Throughput::Elements(1));
    for scheme in [Scheme::Ed25519, Scheme::Curve25519] {
        let id = Identity::from_secret(scheme, [9; 32]);
        let r = frame::auth_response(&id, b"phone", &nonce);
        let name = match scheme {
            Scheme::Ed25519 => "ed25519",
            Scheme::Curve25519 => "xeddsa",
        };
        g.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| verify_login(&r.login, &r.signature, &nonce, BOTH).unwrap())
        });
        let mut bad = r.signature.to_vec();
        bad[10] ^= 1;
        // A wrong signature is tried under both schemes before it is refused.
        g.bench_function(format!("refuse_bad_signature/{name}"), |b| {
            b.iter(|| verify_login(&r.login, &bad, &nonce, BOTH).unwrap_err())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = frames, checks, login
}
criterion_main!(benches);
