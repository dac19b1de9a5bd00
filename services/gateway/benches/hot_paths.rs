//! Gateway hot paths (`cargo bench -p tassis-gateway`): frame decoding and encoding of the
//! messages every send and delivery produces, the request checks every frame goes through
//! (`ops::check`), and login verification in both schemes.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use tassis_client::{Identity, Scheme, frame};
use tassis_gateway::auth::{Schemes, verify_login};
use tassis_gateway::ops;
use tassis_proto::tassis::message::Payload;
use tassis_proto::tassis::{Ack, Address, Message, OutboundMessage};

fn send_frame() -> Vec<u8> {
    Message {
        sequence: 7,
        payload: Some(Payload::OutboundMessage(OutboundMessage {
            to: Some(Address {
                identity_key: Bytes::from(vec![1; 32]),
                device_id: Bytes::from_static(b"phone"),
            }),
            unidentified_sender_message: Bytes::from(vec![0x5a; 1024]),
        })),
    }
    .encode_to_vec()
}

fn frames(c: &mut Criterion) {
    let send = Bytes::from(send_frame());
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_send_1k", |b| b.iter(|| Message::decode(send.clone()).unwrap()));
    g.bench_function("decode_and_check_send_1k", |b| {
        b.iter(|| {
            let m = Message::decode(send.clone()).unwrap();
            ops::check(m.payload.as_ref(), false).unwrap()
        })
    });
    let delivery = Message {
        sequence: 9,
        payload: Some(Payload::InboundMessage(Bytes::from(vec![0x5a; 1024]))),
    };
    g.bench_function("encode_delivery_1k", |b| b.iter(|| delivery.encode_to_vec()));
    let ack = Message {
        sequence: 9,
        payload: Some(Payload::Ack(Ack {})),
    };
    g.bench_function("encode_ack", |b| b.iter(|| ack.encode_to_vec()));
    let ack_frame = Bytes::from(ack.encode_to_vec());
    g.bench_function("decode_and_check_ack", |b| {
        b.iter(|| {
            let m = Message::decode(ack_frame.clone()).unwrap();
            ops::check(m.payload.as_ref(), true).unwrap()
        })
    });
    g.finish();
}

fn login(c: &mut Criterion) {
    let nonce = [3u8; 32];
    let both = Schemes {
        ed25519: true,
        xeddsa: true,
    };
    let mut g = c.benchmark_group("login");
    for scheme in [Scheme::Ed25519, Scheme::Curve25519] {
        let id = Identity::from_secret(scheme, [9; 32]);
        let r = frame::auth_response(&id, b"phone", &nonce);
        g.bench_function(format!("verify_{}", scheme.as_str()), |b| {
            b.iter(|| verify_login(&r.login, &r.signature, &nonce, both).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, frames, login);
criterion_main!(benches);
