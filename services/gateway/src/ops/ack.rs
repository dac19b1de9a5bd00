//! Ack from the client: acknowledges the inboundMessage it names by sequence. Unknown sequences
//! (including acks on anonymous connections) are ignored; nothing is sent back.

use crate::session::{Flow, Session};

pub fn handle(s: &mut Session, seq: u32) -> Flow {
    if let Some(login) = s.login.as_mut()
        && let Some(message_id) = login.pending.remove(&seq)
    {
        login.subscription.ack(message_id);
        s.ctx.metrics.deliveries.with_label_values(&["acked"]).inc();
    }
    Flow::Continue
}
