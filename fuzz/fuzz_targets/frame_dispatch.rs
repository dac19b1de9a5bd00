//! Any bytes a client can send in a binary frame, through the gateway's pure request step
//! (`ops::from_frame`: `tassis.Message` decoding, then `ops::check`'s access rules and field
//! checks) as an anonymous and as an authenticated connection.
//!
//! Beyond "never panics", it asserts:
//! - an unreadable frame gets `invalid_request` with sequence 0; a readable one is answered with
//!   its own sequence;
//! - every refusal is one of docs/protocol.md §12's error names, with a description, and is the
//!   one a model written from §7 (access rules) and §8 (key and address validation, numRequested)
//!   expects; every acceptance is one the model expects;
//! - an accepted request re-encodes (`Request::into_payload`, same sequence) to the payload that
//!   was decoded, and that frame parses to the same request.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tassis_gateway::ops::{self, Request};
use tassis_proto::tassis::Message;
use tassis_proto::tassis::message::Payload;

/// docs/protocol.md §12's error names.
const NAMES: [&str; 11] = [
    "unknown_error",
    "invalid_request",
    "message_too_large",
    "unauthorized",
    "attempted_anonymous_op_on_authenticated_connection",
    "invalid_identity_key",
    "unknown_identity",
    "unknown_device",
    "unable_to_open_subscriber",
    "rate_limited",
    "unavailable",
];

const ANON_OP: &str = "attempted_anonymous_op_on_authenticated_connection";

/// What docs/protocol.md §7 and §8 say the gateway answers before any backend is asked: the
/// operation's name, or the error name.
fn expected(payload: Option<&Payload>, authenticated: bool) -> Result<&'static str, &'static str> {
    let ik_ok = |k: &[u8]| k.len() == 32;
    match payload {
        None => Err("invalid_request"),
        Some(Payload::AuthResponse(_)) if authenticated => Err(ANON_OP),
        Some(Payload::AuthResponse(_)) => Ok("login"),
        Some(Payload::Register(_)) if !authenticated => Err("unauthorized"),
        Some(Payload::Register(_)) => Ok("register"),
        Some(Payload::Unregister(_)) if !authenticated => Err("unauthorized"),
        Some(Payload::Unregister(_)) => Ok("unregister"),
        Some(Payload::RequestPreKeys(_)) if authenticated => Err(ANON_OP),
        Some(Payload::RequestPreKeys(r)) if !ik_ok(&r.identity_key) => Err("invalid_identity_key"),
        Some(Payload::RequestPreKeys(_)) => Ok("request_pre_keys"),
        Some(Payload::OutboundMessage(_)) if authenticated => Err(ANON_OP),
        Some(Payload::OutboundMessage(m)) => match &m.to {
            None => Err("invalid_request"),
            Some(a) if !ik_ok(&a.identity_key) => Err("invalid_identity_key"),
            Some(a) if a.device_id.is_empty() || a.device_id.len() > 64 => Err("invalid_request"),
            Some(_) => Ok("send"),
        },
        Some(Payload::RequestUploadAuthorizations(r)) if r.num_requested < 1 => Err("invalid_request"),
        Some(Payload::RequestUploadAuthorizations(_)) => Ok("upload_authorizations"),
        Some(Payload::Ack(_)) => Ok("ack"),
        // Server-only payloads.
        Some(_) => Err("invalid_request"),
    }
}

fuzz_target!(|data: &[u8]| {
    let decoded = Message::decode(data).ok();
    for authenticated in [false, true] {
        let (seq, result) = ops::from_frame(Bytes::copy_from_slice(data), authenticated);
        let Some(msg) = &decoded else {
            let e = result.expect_err("an unreadable frame is refused");
            assert_eq!((seq, e.name.as_str()), (0, "invalid_request"));
            assert_eq!(e.description, ops::UNREADABLE_FRAME);
            continue;
        };
        assert_eq!(seq, msg.sequence, "a reply carries the client's sequence");
        let model = expected(msg.payload.as_ref(), authenticated);
        match result {
            Err(e) => {
                assert!(NAMES.contains(&e.name.as_str()), "not a protocol error name: {e}");
                assert!(!e.description.is_empty(), "{e}");
                assert_eq!(Err(e.name.as_str()), model, "authenticated: {authenticated}, {msg:?}");
            }
            Ok(request) => {
                assert_eq!(Ok(request.name()), model, "authenticated: {authenticated}, {msg:?}");
                assert_eq!(Some(request.name()), ops::name(msg.payload.as_ref()));
                reencodes(seq, request, msg, authenticated);
            }
        }
    }
});

/// An accepted request is exactly the decoded payload, and survives a round trip on the wire.
fn reencodes(seq: u32, request: Request, msg: &Message, authenticated: bool) {
    let payload = request.clone().into_payload();
    assert_eq!(
        Some(&payload),
        msg.payload.as_ref(),
        "the request is the payload as decoded"
    );
    let again = Message {
        sequence: seq,
        payload: Some(payload),
    }
    .encode_to_vec();
    let (seq2, parsed) = ops::from_frame(Bytes::from(again), authenticated);
    assert_eq!(seq2, seq);
    assert_eq!(parsed.expect("a re-encoded request is accepted again"), request);
}
