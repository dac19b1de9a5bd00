//! AuthResponse: verify the login against this connection's challenge, bind the address, Ack,
//! then start delivery of the device's queue and check its one-time prekeys.

use tassis_proto::tassis::{Ack, AuthResponse, message::Payload};

use crate::auth::verify_login;
use crate::session::{Flow, LoggedIn, Session};
use crate::{ErrorName, GatewayError};

pub async fn handle(s: &mut Session, seq: u32, a: AuthResponse) -> Result<Flow, GatewayError> {
    let address = match verify_login(&a.login, &a.signature, &s.nonce, s.ctx.schemes) {
        Ok(addr) => addr,
        Err(e) => {
            s.ctx.metrics.logins.with_label_values(&["refused"]).inc();
            tracing::debug!(reason = %e, "login refused");
            return Err(GatewayError::unauthorized(e.to_string()));
        }
    };
    // Deliveries wait in the subscription's channel until this handler returns, so the Ack
    // below still precedes every delivery.
    let Some(subscription) = s.ctx.replicas.hub().subscribe(address.clone()) else {
        return Err(GatewayError::new(
            ErrorName::Unavailable,
            "no messaging replica is available, retry later",
        ));
    };
    s.ctx.metrics.logins.with_label_values(&["ok"]).inc();
    let flow = super::reply(s, seq, Payload::Ack(Ack {})).await?;
    s.login = Some(LoggedIn {
        address,
        subscription,
        pending: Default::default(),
        uncredited: 0,
    });
    if let Flow::Close(..) = flow {
        return Ok(flow);
    }
    Ok(super::prekeys_low::check(s).await)
}
