//! One module per client operation. [`dispatch`] applies the access rules (which payloads need an
//! authenticated or an anonymous connection) and routes each payload; every reply carries the
//! client's sequence.

pub mod ack;
pub mod keys;
pub mod login;
pub mod prekeys_low;
pub mod send;
pub mod uploads;

use tassis_proto::tassis::message::Payload;

use crate::GatewayError;
use crate::session::{Flow, Session};

/// The operation a client payload asks for, for spans (`None` for payloads only servers send).
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

/// Handles one payload. Returns the operation's name (for metrics) and the outcome; an `Err` is
/// sent to the client as an Error with `seq`.
pub async fn dispatch(
    s: &mut Session,
    seq: u32,
    payload: Option<Payload>,
) -> (Option<&'static str>, Result<Flow, GatewayError>) {
    let authed = s.login.is_some();
    match payload {
        None => (
            None,
            Err(GatewayError::invalid_request("message has no (known) payload")),
        ),
        Some(Payload::AuthResponse(a)) => {
            if authed {
                return (Some("login"), Err(GatewayError::anonymous_op()));
            }
            (Some("login"), login::handle(s, seq, a).await)
        }
        Some(Payload::Register(r)) => {
            if !authed {
                return (
                    Some("register"),
                    Err(GatewayError::unauthorized("register needs an authenticated connection")),
                );
            }
            (Some("register"), keys::register(s, seq, r).await)
        }
        Some(Payload::Unregister(_)) => {
            if !authed {
                return (
                    Some("unregister"),
                    Err(GatewayError::unauthorized(
                        "unregister needs an authenticated connection",
                    )),
                );
            }
            (Some("unregister"), keys::unregister(s, seq).await)
        }
        Some(Payload::RequestPreKeys(r)) => {
            if authed {
                return (Some("request_pre_keys"), Err(GatewayError::anonymous_op()));
            }
            (Some("request_pre_keys"), keys::request_pre_keys(s, seq, r).await)
        }
        Some(Payload::OutboundMessage(m)) => {
            if authed {
                return (Some("send"), Err(GatewayError::anonymous_op()));
            }
            (Some("send"), send::handle(s, seq, m).await)
        }
        Some(Payload::RequestUploadAuthorizations(r)) => {
            (Some("upload_authorizations"), uploads::handle(s, seq, r).await)
        }
        Some(Payload::Ack(_)) => (None, Ok(ack::handle(s, seq))),
        Some(
            Payload::Error(_)
            | Payload::Configuration(_)
            | Payload::AuthChallenge(_)
            | Payload::PreKeys(_)
            | Payload::PreKeysLow(_)
            | Payload::UploadAuthorizations(_)
            | Payload::InboundMessage(_),
        ) => (
            None,
            Err(GatewayError::invalid_request("this payload is sent by the server only")),
        ),
    }
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
