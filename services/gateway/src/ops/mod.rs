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

/// The stateless half of handling a payload, before anything reaches a backend: the access
/// rules (which payloads need an authenticated or an anonymous connection), server-only
/// payloads, and every field check that needs no backend (addresses, key sizes, numRequested).
/// Returns the operation's name, or the Error the client gets. Pure and synchronous, so it is
/// fuzzed on its own (fuzz target `frame_dispatch`) and benchmarked.
pub fn check(payload: Option<&Payload>, authenticated: bool) -> Result<&'static str, GatewayError> {
    let Some(p) = payload else {
        return Err(GatewayError::invalid_request("message has no (known) payload"));
    };
    let Some(op) = name(Some(p)) else {
        return Err(GatewayError::invalid_request("this payload is sent by the server only"));
    };
    match p {
        Payload::AuthResponse(_) | Payload::RequestPreKeys(_) | Payload::OutboundMessage(_) if authenticated => {
            return Err(GatewayError::anonymous_op());
        }
        Payload::Register(_) | Payload::Unregister(_) if !authenticated => {
            return Err(GatewayError::unauthorized(format!(
                "{op} needs an authenticated connection"
            )));
        }
        Payload::RequestPreKeys(r) => tassis_proto::address::check_identity_key(&r.identity_key)?,
        Payload::OutboundMessage(m) => {
            tassis_proto::address::check_address(m.to.as_ref())?;
        }
        Payload::RequestUploadAuthorizations(r) if r.num_requested < 1 => {
            return Err(GatewayError::invalid_request(format!(
                "numRequested must be at least 1, got {}",
                r.num_requested
            )));
        }
        _ => {}
    }
    Ok(op)
}

/// Handles one payload: [`check`], then the operation. Returns the operation's name (for
/// metrics) and the outcome; an `Err` is sent to the client as an Error with `seq`.
pub async fn dispatch(
    s: &mut Session,
    seq: u32,
    payload: Option<Payload>,
) -> (Option<&'static str>, Result<Flow, GatewayError>) {
    let op = name(payload.as_ref());
    if let Err(e) = check(payload.as_ref(), s.login.is_some()) {
        return (op, Err(e));
    }
    let result = match payload.expect("checked") {
        Payload::AuthResponse(a) => login::handle(s, seq, a).await,
        Payload::Register(r) => keys::register(s, seq, r).await,
        Payload::Unregister(_) => keys::unregister(s, seq).await,
        Payload::RequestPreKeys(r) => keys::request_pre_keys(s, seq, r).await,
        Payload::OutboundMessage(m) => send::handle(s, seq, m).await,
        Payload::RequestUploadAuthorizations(r) => uploads::handle(s, seq, r).await,
        Payload::Ack(_) => return (None, Ok(ack::handle(s, seq))),
        _ => unreachable!("check refuses server-only payloads"),
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
