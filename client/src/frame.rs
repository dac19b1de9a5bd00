//! Frame encoding and decoding, and construction of the protocol's composite messages.
//!
//! Exists so the byte-level rules live in one pure, testable place apart from the socket code:
//! one WebSocket binary frame is exactly one protobuf `tassis.Message`, and an `AuthResponse`
//! signs the `Login` bytes exactly as sent (they are serialized once, here, and never again).

use bytes::Bytes;
use prost::Message as _;
use tassis_proto::tassis::{Address, AuthResponse, Login, Message, message::Payload};

use crate::error::{ClientError, Result};
use crate::identity::Identity;

/// Serializes one `Message` into the bytes of one binary frame.
pub fn encode(message: &Message) -> Vec<u8> {
    message.encode_to_vec()
}

/// Parses the bytes of one binary frame.
pub fn decode(frame: &[u8]) -> Result<Message> {
    Ok(Message::decode(frame)?)
}

/// A `Message` with the given sequence and payload.
pub fn message(sequence: u32, payload: Payload) -> Message {
    Message {
        sequence,
        payload: Some(payload),
    }
}

/// An `Address` from raw identity key and device id bytes.
pub fn address(identity_key: impl Into<Bytes>, device_id: impl Into<Bytes>) -> Address {
    Address {
        identity_key: identity_key.into(),
        device_id: device_id.into(),
    }
}

/// The `AuthResponse` answering challenge `nonce`: `login` is the serialized
/// `Login{address{identityKey = identity's public key, deviceId}, nonce}`, `signature` the
/// identity's signature over exactly those bytes.
pub fn auth_response(identity: &Identity, device_id: &[u8], nonce: &[u8]) -> AuthResponse {
    let login = Login {
        address: Some(address(
            Bytes::copy_from_slice(&identity.public_key()),
            Bytes::copy_from_slice(device_id),
        )),
        nonce: Bytes::copy_from_slice(nonce),
    }
    .encode_to_vec();
    let signature = identity.sign(&login);
    AuthResponse {
        login: Bytes::from(login),
        signature: Bytes::copy_from_slice(&signature),
    }
}

/// The protocol (camelCase) name of a payload, for logs and error messages.
pub fn payload_name(payload: &Payload) -> &'static str {
    match payload {
        Payload::Ack(_) => "ack",
        Payload::Error(_) => "error",
        Payload::Configuration(_) => "configuration",
        Payload::AuthChallenge(_) => "authChallenge",
        Payload::AuthResponse(_) => "authResponse",
        Payload::Register(_) => "register",
        Payload::Unregister(_) => "unregister",
        Payload::RequestPreKeys(_) => "requestPreKeys",
        Payload::PreKeys(_) => "preKeys",
        Payload::PreKeysLow(_) => "preKeysLow",
        Payload::RequestUploadAuthorizations(_) => "requestUploadAuthorizations",
        Payload::UploadAuthorizations(_) => "uploadAuthorizations",
        Payload::OutboundMessage(_) => "outboundMessage",
        Payload::InboundMessage(_) => "inboundMessage",
    }
}

/// Name of an optional payload (`"none"` when absent).
pub fn payload_name_opt(payload: Option<&Payload>) -> &'static str {
    payload.map(payload_name).unwrap_or("none")
}

/// Turns a reply into `Ok(payload)`, or `Err(ClientError::Server)` if it is an `Error`, or
/// `Err(ClientError::Protocol)` if it has no payload.
pub fn into_result(reply: Message) -> Result<Payload> {
    match reply.payload {
        Some(Payload::Error(e)) => Err(ClientError::Server {
            name: e.name,
            description: e.description,
        }),
        Some(p) => Ok(p),
        None => Err(ClientError::Protocol(format!(
            "reply to sequence {} has no payload",
            reply.sequence
        ))),
    }
}

/// Builds the "wrong reply" error.
pub(crate) fn unexpected(expected: &str, got: &Payload) -> ClientError {
    ClientError::Protocol(format!("expected {expected}, got {}", payload_name(got)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, VerifyingKey};
    use tassis_proto::tassis::{Ack, Error, OutboundMessage, PreKey, PreKeys};

    #[test]
    fn round_trip() {
        let msgs = [
            message(1, Payload::Ack(Ack {})),
            message(7, Payload::InboundMessage(Bytes::from_static(b"sealed"))),
            message(
                u32::MAX,
                Payload::OutboundMessage(OutboundMessage {
                    to: Some(address(vec![1u8; 32], b"dev".to_vec())),
                    unidentified_sender_message: Bytes::from_static(b"x"),
                }),
            ),
            message(
                3,
                Payload::PreKeys(PreKeys {
                    pre_keys: vec![PreKey {
                        device_id: Bytes::from_static(b"d"),
                        signed_pre_key: Bytes::from_static(b"s"),
                        one_time_pre_key: Bytes::new(),
                    }],
                }),
            ),
        ];
        for m in msgs {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn wire_bytes_are_exact() {
        // sequence (field 1, varint) = 1, ack (field 2, empty message).
        assert_eq!(encode(&message(1, Payload::Ack(Ack {}))), [0x08, 0x01, 0x12, 0x00]);
        // inboundMessage is field 16 bytes: key = (16 << 3) | 2 = 0x82 0x01.
        assert_eq!(
            encode(&message(2, Payload::InboundMessage(Bytes::from_static(b"hi")))),
            [0x08, 0x02, 0x82, 0x01, 0x02, b'h', b'i']
        );
        // preKeysLow is field 12: key = (12 << 3) | 2 = 0x62; keysRequested field 1 varint.
        assert_eq!(
            decode(&[0x08, 0x05, 0x62, 0x02, 0x08, 0x14]).unwrap(),
            message(
                5,
                Payload::PreKeysLow(tassis_proto::tassis::PreKeysLow { keys_requested: 20 })
            )
        );
        // Field 11 is reserved: an unknown field there is skipped, leaving no payload.
        assert_eq!(
            decode(&[0x08, 0x01, 0x5a, 0x00]).unwrap(),
            Message {
                sequence: 1,
                payload: None
            }
        );
    }

    #[test]
    fn garbage_fails_to_decode() {
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn auth_response_signs_login_bytes_as_sent() {
        let id = Identity::generate_ed25519();
        let nonce = [9u8; 32];
        let resp = auth_response(&id, b"device-1", &nonce);
        let login = Login::decode(resp.login.clone()).unwrap();
        let addr = login.address.unwrap();
        assert_eq!(&addr.identity_key[..], &id.public_key());
        assert_eq!(&addr.device_id[..], b"device-1");
        assert_eq!(&login.nonce[..], &nonce);
        let key = VerifyingKey::from_bytes(&id.public_key()).unwrap();
        let sig: [u8; 64] = resp.signature[..].try_into().unwrap();
        key.verify_strict(&resp.login, &Signature::from_bytes(&sig)).unwrap();
    }

    #[test]
    fn errors_become_server_errors() {
        let reply = message(
            4,
            Payload::Error(Error {
                name: "unknown_identity".into(),
                description: "nobody".into(),
            }),
        );
        let err = into_result(reply).unwrap_err();
        assert_eq!(err.to_string(), "unknown_identity:nobody");
        assert_eq!(err.server_error_name(), Some("unknown_identity"));
        assert!(matches!(
            into_result(Message {
                sequence: 1,
                payload: None
            }),
            Err(ClientError::Protocol(_))
        ));
        assert!(matches!(
            into_result(message(1, Payload::Ack(Ack {}))),
            Ok(Payload::Ack(_))
        ));
    }
}
