//! RequestUploadAuthorizations (any connection): numRequested was validated by `ops::check`
//! (`invalid_request`); the attachments service signs (or answers `unavailable`).

use tassis_proto::attachments_v1::RequestUploadAuthorizationsRequest;
use tassis_proto::tassis::{RequestUploadAuthorizations, message::Payload};

use crate::session::{Flow, Session};
use crate::{ErrorName, GatewayError};

pub async fn handle(s: &mut Session, seq: u32, r: RequestUploadAuthorizations) -> Result<Flow, GatewayError> {
    // Each authorization asked for counts (at most the limit's burst per request).
    let cost = r.num_requested as u32;
    let (ctx, limit) = (s.ctx.clone(), &s.ctx.config.rate_upload_authorizations_per_connection);
    crate::limits::own(
        &ctx,
        &mut s.uploads,
        crate::limits::Kind::UploadAuthorizationsPerConnection,
        limit,
        cost,
    )?;
    let reply = s
        .ctx
        .upstream
        .attachments
        .clone()
        .request_upload_authorizations(s.ctx.upstream.request(RequestUploadAuthorizationsRequest {
            num_requested: r.num_requested,
        }))
        .await
        .map_err(|st| GatewayError::from_status(st, ErrorName::Unavailable))?
        .into_inner();
    super::reply(s, seq, Payload::UploadAuthorizations(reply)).await
}
