//! Any bytes a client can send in a binary frame: decoded as a `tassis.Message`, then through the
//! gateway's request checks (`ops::check`) as an anonymous and as an authenticated connection.
//! Beyond "never panics": a decoded message re-encodes to bytes that decode to the same message,
//! an accepted payload is a client operation, and every refusal is a protocol error name with a
//! description.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tassis_gateway::ops;
use tassis_proto::tassis::Message;

/// docs/protocol.md's error names.
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

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::decode(data) else { return };
    let again = Message::decode(msg.encode_to_vec().as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, msg);
    for authenticated in [false, true] {
        match ops::check(msg.payload.as_ref(), authenticated) {
            Ok(op) => {
                assert_eq!(Some(op), ops::name(msg.payload.as_ref()));
                assert!(op != "login" || !authenticated, "a second login is refused");
            }
            Err(e) => {
                assert!(NAMES.contains(&e.name.as_str()), "{e}");
                assert!(!e.description.is_empty(), "{e}");
            }
        }
    }
});
