//! One module per client operation, entered through [`dispatch`].
//!
//! Handling a client frame has two halves, in the style of mini-redis's `Command::from_frame` /
//! `apply`: [`check`] (and [`from_frame`], which decodes first) is the pure, synchronous half
//! that turns a payload into a validated [`Request`] or the protocol Error the client gets — the
//! access rules (which payloads need an authenticated or an anonymous connection), server-only and
//! missing payloads, and every field check that needs no backend (addresses, identity key sizes,
//! `numRequested`). [`dispatch`] runs it, then the operation's handler, which talks to the
//! backends. The split exists so the part that sees untrusted bytes first can be fuzzed
//! (`fuzz/fuzz_targets/frame_dispatch.rs`) and benchmarked without a session or upstream services.
//! Every reply carries the client's sequence.

pub mod ack;
pub mod keys;
pub mod login;
pub mod prekeys_low;
pub mod send;
pub mod uploads;

use bytes::Bytes;
use prost::Message as _;
use tassis_proto::tassis::message::Payload;
use tassis_proto::tassis::{
    Ack, AuthResponse, Message, OutboundMessage, Register, RequestPreKeys, RequestUploadAuthorizations, Unregister,
};

use crate::GatewayError;
use crate::session::{Flow, Session};

/// The description of the `invalid_request` Error (sequence 0) for a frame that does not decode.
pub const UNREADABLE_FRAME: &str = "frame is not a valid tassis Message";

/// The operation a client payload asks for, for spans and metrics (`None` for payloads only
/// servers send).
pub fn name(payload: Option<&Payload>) -> Option<&'static str> {
    Some(match payload? {
        Payload::AuthResponse(_) => "login",
        Payload::Register(_) => "register",
        Payload::Unregister(_) => "unregister",
        Payload::RequestPreKeys(_) => "request_pre_keys",
        Payload::OutboundMessage(_) => "send",
        Payload::RequestUploadAuthorizations(_) => "upload_authorizations",
        Payload::Ack(_) => "ack",
        _ => return None,
    })
}

/// A client request that passed [`check`]: a client operation allowed on the connection it came
/// on, whose fields passed every check that needs no backend. The handlers rely on what each
/// variant's doc says was checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// `authResponse` on an anonymous connection. The signature and nonce are verified by
    /// [`login::handle`] (they need the session's challenge).
    Login(AuthResponse),
    /// `register` on an authenticated connection. Key material is opaque here.
    Register(Register),
    /// `unregister` on an authenticated connection.
    Unregister,
    /// `requestPreKeys` on an anonymous connection; `identity_key` is 32 bytes.
    RequestPreKeys(RequestPreKeys),
    /// `outboundMessage` on an anonymous connection; `to` is present, with a 32-byte identity key
    /// and a 1..=64-byte device id.
    Send(OutboundMessage),
    /// `requestUploadAuthorizations` on any connection; `num_requested` is at least 1.
    UploadAuthorizations(RequestUploadAuthorizations),
    /// `ack` on any connection (ignored unless it names a delivery of this connection).
    Ack,
}

impl Request {
    /// The operation's name, as [`name`] gives it for the payload this request came from.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Login(_) => "login",
            Request::Register(_) => "register",
            Request::Unregister => "unregister",
            Request::RequestPreKeys(_) => "request_pre_keys",
            Request::Send(_) => "send",
            Request::UploadAuthorizations(_) => "upload_authorizations",
            Request::Ack => "ack",
        }
    }

    /// The payload that carries this request (what a client sends for it).
    pub fn into_payload(self) -> Payload {
        match self {
            Request::Login(a) => Payload::AuthResponse(a),
            Request::Register(r) => Payload::Register(r),
            Request::Unregister => Payload::Unregister(Unregister {}),
            Request::RequestPreKeys(r) => Payload::RequestPreKeys(r),
            Request::Send(m) => Payload::OutboundMessage(m),
            Request::UploadAuthorizations(r) => Payload::RequestUploadAuthorizations(r),
            Request::Ack => Payload::Ack(Ack {}),
        }
    }
}

/// The stateless half of handling a payload, before anything reaches a backend: turns a payload
/// into a [`Request`] or the Error the client gets (docs/protocol.md §7 access rules, §8 edge
/// cases). Pure and synchronous.
pub fn check(payload: Option<Payload>, authenticated: bool) -> Result<Request, GatewayError> {
    let Some(payload) = payload else {
        return Err(GatewayError::invalid_request("message has no (known) payload"));
    };
    let anonymous_only = || {
        if authenticated {
            Err(GatewayError::anonymous_op())
        } else {
            Ok(())
        }
    };
    let authenticated_only = |op: &str| {
        if authenticated {
            Ok(())
        } else {
            Err(GatewayError::unauthorized(format!(
                "{op} needs an authenticated connection"
            )))
        }
    };
    // Exhaustive on purpose: a payload added to the schema must be placed here.
    Ok(match payload {
        Payload::AuthResponse(a) => {
            anonymous_only()?;
            Request::Login(a)
        }
        Payload::Register(r) => {
            authenticated_only("register")?;
            Request::Register(r)
        }
        Payload::Unregister(Unregister {}) => {
            authenticated_only("unregister")?;
            Request::Unregister
        }
        Payload::RequestPreKeys(r) => {
            anonymous_only()?;
            tassis_proto::address::check_identity_key(&r.identity_key)?;
            Request::RequestPreKeys(r)
        }
        Payload::OutboundMessage(m) => {
            anonymous_only()?;
            tassis_proto::address::check_address(m.to.as_ref())?;
            Request::Send(m)
        }
        Payload::RequestUploadAuthorizations(r) => {
            if r.num_requested < 1 {
                return Err(GatewayError::invalid_request(format!(
                    "numRequested must be at least 1, got {}",
                    r.num_requested
                )));
            }
            Request::UploadAuthorizations(r)
        }
        Payload::Ack(Ack {}) => Request::Ack,
        Payload::Error(_)
        | Payload::Configuration(_)
        | Payload::AuthChallenge(_)
        | Payload::PreKeys(_)
        | Payload::PreKeysLow(_)
        | Payload::UploadAuthorizations(_)
        | Payload::InboundMessage(_) => {
            return Err(GatewayError::invalid_request("this payload is sent by the server only"));
        }
    })
}

/// Decodes one binary frame and [`check`]s it: the sequence a reply carries (0 when the frame
/// does not decode) and the request or the Error to send. The session does the same in two steps
/// (decode, then rate limits, then [`dispatch`]); this is the whole pure path in one call, for
/// the fuzzer and the benchmarks.
pub fn from_frame(data: Bytes, authenticated: bool) -> (u32, Result<Request, GatewayError>) {
    match Message::decode(data) {
        Ok(m) => (m.sequence, check(m.payload, authenticated)),
        Err(_) => (0, Err(GatewayError::invalid_request(UNREADABLE_FRAME))),
    }
}

/// Handles one payload: [`check`], then the operation. Returns the operation's name (for
/// metrics) and the outcome; an `Err` is sent to the client as an Error with `seq`.
pub async fn dispatch(
    s: &mut Session,
    seq: u32,
    payload: Option<Payload>,
) -> (Option<&'static str>, Result<Flow, GatewayError>) {
    let op = name(payload.as_ref());
    let request = match check(payload, s.login.is_some()) {
        Ok(r) => r,
        Err(e) => return (op, Err(e)),
    };
    let result = match request {
        Request::Login(a) => login::handle(s, seq, a).await,
        Request::Register(r) => keys::register(s, seq, r).await,
        Request::Unregister => keys::unregister(s, seq).await,
        Request::RequestPreKeys(r) => keys::request_pre_keys(s, seq, r).await,
        Request::Send(m) => send::handle(s, seq, m).await,
        Request::UploadAuthorizations(r) => uploads::handle(s, seq, r).await,
        // Acks are not counted as operations.
        Request::Ack => return (None, Ok(ack::handle(s, seq))),
    };
    (op, result)
}

/// Queues the reply to a request; a closed writer closes the session.
pub(crate) async fn reply(s: &Session, seq: u32, payload: Payload) -> Result<Flow, GatewayError> {
    Ok(match s.send(seq, payload).await {
        Ok(()) => Flow::Continue,
        Err(()) => Flow::Close(
            tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Error,
            "",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorName;
    use tassis_proto::tassis::{
        Address, AuthChallenge, Configuration, Error, PreKeys, PreKeysLow, UploadAuthorizations,
    };

    fn address(ik: usize, dev: usize) -> Option<Address> {
        Some(Address {
            identity_key: Bytes::from(vec![1; ik]),
            device_id: Bytes::from(vec![b'd'; dev]),
        })
    }

    fn send(to: Option<Address>) -> Payload {
        Payload::OutboundMessage(OutboundMessage {
            to,
            unidentified_sender_message: Bytes::from_static(b"sealed"),
        })
    }

    fn refused(payload: Option<Payload>, authenticated: bool) -> ErrorName {
        check(payload, authenticated).expect_err("refused").name
    }

    /// docs/protocol.md §7, row by row, for both kinds of connection.
    #[test]
    fn access_rules() {
        use ErrorName::*;
        let login = Payload::AuthResponse(AuthResponse::default());
        let register = Payload::Register(Register::default());
        let unregister = Payload::Unregister(Unregister {});
        let prekeys = Payload::RequestPreKeys(RequestPreKeys {
            identity_key: Bytes::from(vec![1; 32]),
            known_device_ids: vec![],
        });
        let uploads = Payload::RequestUploadAuthorizations(RequestUploadAuthorizations { num_requested: 1 });
        let ack = Payload::Ack(Ack {});
        // (payload, on an anonymous connection, on an authenticated one): None = allowed.
        let table = [
            (login, None, Some(AttemptedAnonymousOpOnAuthenticatedConnection)),
            (register, Some(Unauthorized), None),
            (unregister, Some(Unauthorized), None),
            (prekeys, None, Some(AttemptedAnonymousOpOnAuthenticatedConnection)),
            (
                send(address(32, 5)),
                None,
                Some(AttemptedAnonymousOpOnAuthenticatedConnection),
            ),
            (uploads, None, None),
            (ack, None, None),
        ];
        for (payload, anonymous, authenticated) in table {
            for (authed, expected) in [(false, anonymous), (true, authenticated)] {
                let got = check(Some(payload.clone()), authed);
                match expected {
                    None => {
                        let r = got.unwrap_or_else(|e| panic!("{payload:?} authed={authed}: {e}"));
                        assert_eq!(Some(r.name()), name(Some(&payload)));
                        assert_eq!(r.into_payload(), payload);
                    }
                    Some(n) => assert_eq!(got.expect_err("refused").name, n, "{payload:?} authed={authed}"),
                }
            }
        }
        let server_only = [
            Payload::Error(Error::default()),
            Payload::Configuration(Configuration::default()),
            Payload::AuthChallenge(AuthChallenge::default()),
            Payload::PreKeys(PreKeys::default()),
            Payload::PreKeysLow(PreKeysLow::default()),
            Payload::UploadAuthorizations(UploadAuthorizations::default()),
            Payload::InboundMessage(Bytes::from_static(b"x")),
        ];
        for p in server_only {
            assert_eq!(name(Some(&p)), None);
            for authed in [false, true] {
                assert_eq!(refused(Some(p.clone()), authed), InvalidRequest);
            }
        }
        for authed in [false, true] {
            assert_eq!(refused(None, authed), InvalidRequest);
        }
    }

    /// docs/protocol.md §8: key and address validation, numRequested.
    #[test]
    fn field_checks() {
        use ErrorName::*;
        assert_eq!(refused(Some(send(None)), false), InvalidRequest);
        assert_eq!(refused(Some(send(address(33, 5))), false), InvalidIdentityKey);
        assert_eq!(refused(Some(send(address(0, 5))), false), InvalidIdentityKey);
        assert_eq!(refused(Some(send(address(32, 0))), false), InvalidRequest);
        assert_eq!(refused(Some(send(address(32, 65))), false), InvalidRequest);
        assert!(check(Some(send(address(32, 64))), false).is_ok());
        assert!(check(Some(send(address(32, 1))), false).is_ok());
        // The access rule comes before the address check.
        assert_eq!(
            refused(Some(send(None)), true),
            AttemptedAnonymousOpOnAuthenticatedConnection
        );
        for n in [31, 33, 0] {
            let p = Payload::RequestPreKeys(RequestPreKeys {
                identity_key: Bytes::from(vec![1; n]),
                known_device_ids: vec![],
            });
            assert_eq!(refused(Some(p), false), InvalidIdentityKey);
        }
        for n in [0, -1, i32::MIN] {
            let p = Payload::RequestUploadAuthorizations(RequestUploadAuthorizations { num_requested: n });
            for authed in [false, true] {
                let e = check(Some(p.clone()), authed).expect_err("refused");
                assert_eq!(e.name, InvalidRequest);
                assert_eq!(e.description, format!("numRequested must be at least 1, got {n}"));
            }
        }
        let many = Payload::RequestUploadAuthorizations(RequestUploadAuthorizations {
            num_requested: i32::MAX,
        });
        assert!(check(Some(many), true).is_ok());
    }

    #[test]
    fn frames() {
        let (seq, r) = from_frame(Bytes::from_static(b"\xff\xff\xff"), false);
        assert_eq!(seq, 0);
        let e = r.expect_err("unreadable");
        assert_eq!(
            (e.name, e.description.as_str()),
            (ErrorName::InvalidRequest, UNREADABLE_FRAME)
        );
        let m = Message {
            sequence: 42,
            payload: Some(send(address(32, 5))),
        };
        let (seq, r) = from_frame(Bytes::from(m.encode_to_vec()), false);
        assert_eq!(seq, 42);
        assert_eq!(r.expect("accepted").into_payload(), m.payload.unwrap());
        let (seq, r) = from_frame(
            Bytes::from(
                Message {
                    sequence: 7,
                    payload: None,
                }
                .encode_to_vec(),
            ),
            true,
        );
        assert_eq!((seq, r.expect_err("no payload").name), (7, ErrorName::InvalidRequest));
    }
}
