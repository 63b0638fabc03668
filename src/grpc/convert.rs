//! Conversions at the gRPC boundary: raw request fields into domain values (a failure
//! names the field), and core results into protobuf messages.

use prost_types::Timestamp;

use super::pb;
use crate::core::{Confirmation, CoreError, DeliveryState, EventView, FlowView, Status};
use crate::domain::{EmailAddress, FlowKind, FlowStep, Outcome, Token, UserId};

pub fn user_id(raw: &str) -> Result<UserId, CoreError> {
    UserId::parse(raw).map_err(|e| CoreError::InvalidUserId(e.to_string()))
}

pub fn email(field: &'static str, raw: &str) -> Result<EmailAddress, CoreError> {
    EmailAddress::parse(raw).map_err(|e| CoreError::InvalidEmail {
        field,
        message: e.to_string(),
    })
}

pub fn token(raw: &str) -> Result<Token, CoreError> {
    Token::parse(raw).map_err(|_| CoreError::InvalidToken)
}

pub fn timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

impl From<FlowKind> for pb::FlowKind {
    fn from(k: FlowKind) -> Self {
        match k {
            FlowKind::Verify => pb::FlowKind::Verify,
            FlowKind::Change => pb::FlowKind::Change,
        }
    }
}

impl From<FlowStep> for pb::FlowStep {
    fn from(s: FlowStep) -> Self {
        match s {
            FlowStep::ConfirmCurrent => pb::FlowStep::ConfirmCurrent,
            FlowStep::ConfirmNew => pb::FlowStep::ConfirmNew,
            FlowStep::Done => pb::FlowStep::Done,
        }
    }
}

impl From<Outcome> for pb::Outcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::EmailVerified => pb::Outcome::EmailVerified,
            Outcome::CurrentConfirmed => pb::Outcome::CurrentConfirmed,
            Outcome::EmailChanged => pb::Outcome::EmailChanged,
        }
    }
}

impl From<DeliveryState> for pb::DeliveryState {
    fn from(d: DeliveryState) -> Self {
        match d {
            DeliveryState::Unspecified => pb::DeliveryState::Unspecified,
            DeliveryState::Queued => pb::DeliveryState::Queued,
            DeliveryState::Sent => pb::DeliveryState::Sent,
            DeliveryState::Retrying => pb::DeliveryState::Retrying,
            DeliveryState::Failed => pb::DeliveryState::Failed,
            DeliveryState::Bounced => pb::DeliveryState::Bounced,
        }
    }
}

impl From<FlowView> for pb::Flow {
    fn from(f: FlowView) -> Self {
        pb::Flow {
            flow_id: f.flow_id,
            kind: pb::FlowKind::from(f.kind).into(),
            step: pb::FlowStep::from(f.step).into(),
            masked_recipient: f.masked_recipient,
            expires_at: Some(timestamp(f.expires_at)),
            resend_available_at: Some(timestamp(f.resend_available_at)),
            delivery: pb::DeliveryState::from(f.delivery).into(),
            delivery_detail: f.delivery_detail,
        }
    }
}

impl From<Confirmation> for pb::ConfirmLinkResponse {
    fn from(c: Confirmation) -> Self {
        pb::ConfirmLinkResponse {
            user_id: c.user_id,
            flow: Some(c.flow.into()),
            outcome: pb::Outcome::from(c.outcome).into(),
            email: c.email,
        }
    }
}

impl From<Status> for pb::GetStatusResponse {
    fn from(s: Status) -> Self {
        pb::GetStatusResponse {
            email: s.email.unwrap_or_default(),
            email_verified: s.email_verified,
            verified_at: s.verified_at.map(timestamp),
            pending: s.pending.map(Into::into),
        }
    }
}

/// One event of the change feed, as WatchEvents streams it and NATS carries it.
impl From<crate::core::FeedItem> for pb::WatchEventsResponse {
    fn from(item: crate::core::FeedItem) -> Self {
        pb::WatchEventsResponse {
            cursor: item.cursor,
            user_id: item.user_id,
            event: Some(item.event.into()),
        }
    }
}

impl From<EventView> for pb::Event {
    fn from(e: EventView) -> Self {
        pb::Event {
            r#type: e.event_type,
            at: Some(timestamp(e.at)),
            flow_id: e.flow_id,
            masked_address: e.masked_address,
            detail: e.detail,
        }
    }
}
