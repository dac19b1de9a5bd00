//! PreKeysLow: right after login and then periodically, a registered device whose one-time
//! prekeys fell below the low-water mark is asked for more. Failures to check are logged and
//! retried at the next interval; they never disturb the connection.

use tassis_proto::keystore_v1::DeviceStatusRequest;
use tassis_proto::tassis::{PreKeysLow, message::Payload};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::session::{Flow, Session};

pub async fn check(s: &mut Session) -> Flow {
    let Some(login) = s.login.as_ref() else {
        return Flow::Continue;
    };
    let req = DeviceStatusRequest {
        address: Some(login.address.clone()),
    };
    let status = match s
        .ctx
        .upstream
        .keystore
        .clone()
        .device_status(s.ctx.upstream.request(req))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => {
            tracing::warn!(status = %e, "prekey check failed");
            return Flow::Continue;
        }
    };
    if status.registered && status.one_time_pre_keys < s.ctx.config.prekeys_low_watermark {
        let keys_requested = s.ctx.config.prekeys_requested;
        if s.push(Payload::PreKeysLow(PreKeysLow { keys_requested }))
            .await
            .is_err()
        {
            return Flow::Close(CloseCode::Error, "");
        }
    }
    Flow::Continue
}
