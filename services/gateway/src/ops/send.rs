//! OutboundMessage (anonymous): queue a sealed-sender message for one device. The Ack goes out
//! only after messaging has stored it durably. Nothing about the sender is known or logged.

use tassis_proto::messaging_v1::EnqueueRequest;
use tassis_proto::tassis::{Ack, OutboundMessage, message::Payload};

use crate::session::{Flow, Session};
use crate::{ErrorName, GatewayError};

pub async fn handle(s: &mut Session, seq: u32, m: OutboundMessage) -> Result<Flow, GatewayError> {
    let to = m.to.as_ref().expect("checked by ops::check");
    let device = [&to.identity_key[..], &to.device_id[..]].concat();
    let limit = &s.ctx.config.rate_sends_per_device;
    crate::limits::shared(&s.ctx, crate::limits::Kind::SendsPerDevice, limit, &device).await?;
    let req = EnqueueRequest {
        to: m.to,
        message: m.unidentified_sender_message,
    };
    s.ctx
        .upstream
        .messaging
        .clone()
        .enqueue(s.ctx.upstream.request(req))
        .await
        .map_err(|st| GatewayError::from_status(st, ErrorName::UnknownDevice))?;
    super::reply(s, seq, Payload::Ack(Ack {})).await
}
