//! RequestUploadAuthorizations (any connection): numRequested was validated by `ops::check`
//! (`invalid_request`); the attachments service signs (or answers `unavailable`).

use tassis_proto::attachments_v1::RequestUploadAuthorizationsRequest;
use tassis_proto::tassis::{RequestUploadAuthorizations, message::Payload};

use crate::session::{Flow, Session};
use crate::{ErrorName, GatewayError};

pub async fn handle(s: &mut Session, seq: u32, r: RequestUploadAuthorizations) -> Result<Flow, GatewayError> {
    // The limit counts authorizations granted (the attachments service caps numRequested), and
    // a request that got none still counts one: a request needs a token to go through.
    let kind = crate::limits::Kind::UploadAuthorizationsPerConnection;
    let (ctx, limit) = (s.ctx.clone(), &s.ctx.config.rate_upload_authorizations_per_connection);
    crate::limits::own_available(&ctx, &s.uploads, kind, limit)?;
    let reply = s
        .ctx
        .upstream
        .attachments
        .clone()
        .request_upload_authorizations(s.ctx.upstream.request(RequestUploadAuthorizationsRequest {
            num_requested: r.num_requested,
        }))
        .await
        .map(|r| r.into_inner());
    let granted = reply.as_ref().map_or(1, |r| r.authorizations.len().max(1) as u32);
    crate::limits::charge(&ctx, &mut s.uploads, limit, granted);
    let reply = reply.map_err(|st| GatewayError::from_status(st, ErrorName::Unavailable))?;
    super::reply(s, seq, Payload::UploadAuthorizations(reply)).await
}
