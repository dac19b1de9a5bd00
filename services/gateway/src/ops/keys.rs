//! Register, Unregister (authenticated) and RequestPreKeys (anonymous): thin mappings onto the
//! keystore service.

use tassis_proto::keystore_v1::{RegisterRequest, RequestPreKeysRequest, UnregisterRequest};
use tassis_proto::tassis::{Ack, PreKeys, Register, RequestPreKeys, message::Payload};

use crate::session::{Flow, Session};
use crate::{ErrorName, GatewayError};

fn address(s: &Session) -> tassis_proto::tassis::Address {
    s.login.as_ref().expect("checked by dispatch").address.clone()
}

pub async fn register(s: &mut Session, seq: u32, r: Register) -> Result<Flow, GatewayError> {
    let req = RegisterRequest {
        address: Some(address(s)),
        signed_pre_key: r.signed_pre_key,
        one_time_pre_keys: r.one_time_pre_keys,
    };
    s.ctx
        .upstream
        .keystore
        .clone()
        .register(s.ctx.upstream.request(req))
        .await
        .map_err(|st| GatewayError::from_status(st, ErrorName::UnknownDevice))?;
    super::reply(s, seq, Payload::Ack(Ack {})).await
}

pub async fn unregister(s: &mut Session, seq: u32) -> Result<Flow, GatewayError> {
    let req = UnregisterRequest {
        address: Some(address(s)),
    };
    s.ctx
        .upstream
        .keystore
        .clone()
        .unregister(s.ctx.upstream.request(req))
        .await
        .map_err(|st| GatewayError::from_status(st, ErrorName::UnknownDevice))?;
    super::reply(s, seq, Payload::Ack(Ack {})).await
}

pub async fn request_pre_keys(s: &mut Session, seq: u32, r: RequestPreKeys) -> Result<Flow, GatewayError> {
    let limit = &s.ctx.config.rate_prekey_fetches_per_identity;
    crate::limits::shared(
        &s.ctx,
        crate::limits::Kind::PrekeyFetchesPerIdentity,
        limit,
        &r.identity_key,
    )
    .await?;
    let req = RequestPreKeysRequest {
        identity_key: r.identity_key,
        known_device_ids: r.known_device_ids,
    };
    let reply = s
        .ctx
        .upstream
        .keystore
        .clone()
        .request_pre_keys(s.ctx.upstream.request(req))
        .await
        .map_err(|st| GatewayError::from_status(st, ErrorName::UnknownIdentity))?
        .into_inner();
    super::reply(
        s,
        seq,
        Payload::PreKeys(PreKeys {
            pre_keys: reply.pre_keys,
        }),
    )
    .await
}
