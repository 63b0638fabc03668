//! The rows a PostgreSQL use-case writes, held until they go out together in one of the
//! static statements of `sql/` (`writes.sql` for a locked use-case, `request.sql`,
//! `confirm.sql`, `confirm_change.sql` or `confirm_current.sql` for an optimistic one). A kind of row that comes
//! in any number travels as ONE parameter, a JSON array read back by
//! `jsonb_populate_recordset`; the hot statements take their one row of a kind (and
//! `request.sql` its few limits' steps) as a typed parameter per column instead
//! (`columns`), which costs PostgreSQL less. Either way the
//! statement's text never changes with what a use-case writes: one prepared statement per
//! connection, whatever the path.

use serde_json::{Value, json};

use super::entity::{event, flow, outbox, token};
use crate::domain::Rate;

/// A user's address of record as a use-case sets it.
pub(super) struct UserSet {
    pub email: String,
    pub key: String,
    pub verified: bool,
    pub verified_at: Option<i64>,
    pub updated_at: i64,
}

/// What a use-case has written so far and not yet sent.
#[derive(Default)]
pub(super) struct Rows {
    pub new_flows: Vec<Value>,
    pub moved_flows: Vec<Value>,
    pub new_tokens: Vec<Value>,
    pub new_mails: Vec<Value>,
    pub new_events: Vec<Value>,
}

impl Rows {
    pub fn is_empty(&self) -> bool {
        self.new_flows.is_empty()
            && self.moved_flows.is_empty()
            && self.new_tokens.is_empty()
            && self.new_mails.is_empty()
            && self.new_events.is_empty()
    }

    pub fn new_flow(&mut self, f: &flow::Model) {
        self.new_flows.push(json!({
            "flow_id": f.flow_id, "user_id": f.user_id, "kind": f.kind.as_str(),
            "step": f.step.as_str(), "state": f.state.as_str(), "new_email": f.new_email,
            "old_email": f.old_email, "locale": f.locale, "expires_at": f.expires_at,
            "resend_available_at": f.resend_available_at, "created_at": f.created_at,
            "updated_at": f.updated_at, "failed_codes": f.failed_codes,
            "locked_until": f.locked_until,
        }));
    }

    pub fn moved_flow(&mut self, f: &flow::Model) {
        self.moved_flows.push(json!({
            "flow_id": f.flow_id, "step": f.step.as_str(), "state": f.state.as_str(),
            "expires_at": f.expires_at, "resend_available_at": f.resend_available_at,
            "updated_at": f.updated_at, "failed_codes": f.failed_codes,
            "locked_until": f.locked_until,
        }));
    }

    pub fn new_token(&mut self, t: &token::Model) {
        self.new_tokens.push(json!({
            "digest": t.digest, "flow_id": t.flow_id, "step": t.step.as_str(),
            "state": t.state.as_str(), "expires_at": t.expires_at, "created_at": t.created_at,
            "used_at": t.used_at, "code_digest": t.code_digest,
        }));
    }

    pub fn new_mail(&mut self, m: &outbox::Model) {
        self.new_mails.push(json!({
            "mail_id": m.mail_id, "user_id": m.user_id, "flow_id": m.flow_id,
            "template": m.template.as_str(), "recipient": m.recipient, "locale": m.locale,
            "params": m.params, "sealed_link": m.sealed_link, "state": m.state.as_str(),
            "attempts": m.attempts, "next_attempt_at": m.next_attempt_at,
            "claimed_until": m.claimed_until, "claimed_by": m.claimed_by,
            "last_error": m.last_error, "created_at": m.created_at, "sent_at": m.sent_at,
            "bounce": m.bounce,
        }));
    }

    /// An event (its free text already cut to the columns' sizes: `events::row`).
    pub fn new_event(&mut self, e: &event::ActiveModel) {
        self.new_events.push(json!({
            "user_id": e.user_id.as_ref(), "flow_id": e.flow_id.as_ref(),
            "event_type": e.event_type.as_ref(), "masked_address": e.masked_address.as_ref(),
            "detail": e.detail.as_ref(), "at": e.at.as_ref(), "actor": e.actor.as_ref(),
            "request_id": e.request_id.as_ref(),
        }));
    }

    /// The five row parameters, in the order both statements take them: new flows, moved
    /// flows, new tokens, new mails, new events.
    pub fn params(&self) -> [sea_orm::Value; 5] {
        [
            array(&self.new_flows),
            array(&self.moved_flows),
            array(&self.new_tokens),
            array(&self.new_mails),
            array(&self.new_events),
        ]
    }
}

/// A user's address as the one row of `writes.sql`'s `$1`.
pub(super) fn address_row(user_id: &str, set: &UserSet) -> Value {
    json!({
        "user_id": user_id, "email": set.email, "email_key": set.key,
        "email_verified": set.verified, "verified_at": set.verified_at,
        "updated_at": set.updated_at,
    })
}

/// Rows as one statement parameter: a JSON array (the statement casts it to `jsonb`).
pub(super) fn array(rows: &[Value]) -> sea_orm::Value {
    serde_json::to_string(rows)
        .expect("JSON values always serialize")
        .into()
}

/// One row as one statement parameter: a JSON object (the statement casts it to `jsonb`
/// and reads it with `jsonb_populate_record`: one row, found by its primary key).
pub(super) fn object(row: &Value) -> sea_orm::Value {
    row.to_string().into()
}

/// A column's SQL type, for a row sent as a parameter per column.
#[derive(Clone, Copy)]
pub(super) enum Col {
    Text,
    Int,
}

/// Every column of `flows`, in the table's order (`request.sql`'s new flow).
pub(super) const FLOW: [(&str, Col); 14] = [
    ("flow_id", Col::Text),
    ("user_id", Col::Text),
    ("kind", Col::Text),
    ("step", Col::Text),
    ("state", Col::Text),
    ("new_email", Col::Text),
    ("old_email", Col::Text),
    ("locale", Col::Text),
    ("expires_at", Col::Int),
    ("resend_available_at", Col::Int),
    ("created_at", Col::Int),
    ("updated_at", Col::Int),
    ("failed_codes", Col::Int),
    ("locked_until", Col::Int),
];

/// What a moved flow sets (`confirm.sql`, `confirm_change.sql`), its id first.
pub(super) const MOVED_FLOW: [(&str, Col); 8] = [
    ("flow_id", Col::Text),
    ("step", Col::Text),
    ("state", Col::Text),
    ("expires_at", Col::Int),
    ("resend_available_at", Col::Int),
    ("updated_at", Col::Int),
    ("failed_codes", Col::Int),
    ("locked_until", Col::Int),
];

/// Every column of `tokens`, in the table's order.
pub(super) const TOKEN: [(&str, Col); 8] = [
    ("digest", Col::Text),
    ("flow_id", Col::Text),
    ("step", Col::Text),
    ("state", Col::Text),
    ("expires_at", Col::Int),
    ("created_at", Col::Int),
    ("used_at", Col::Int),
    ("code_digest", Col::Text),
];

/// Every column of `outbox`, in the table's order.
pub(super) const MAIL: [(&str, Col); 17] = [
    ("mail_id", Col::Text),
    ("user_id", Col::Text),
    ("flow_id", Col::Text),
    ("template", Col::Text),
    ("recipient", Col::Text),
    ("locale", Col::Text),
    ("params", Col::Text),
    ("sealed_link", Col::Text),
    ("state", Col::Text),
    ("attempts", Col::Int),
    ("next_attempt_at", Col::Int),
    ("claimed_until", Col::Int),
    ("last_error", Col::Text),
    ("created_at", Col::Int),
    ("sent_at", Col::Int),
    ("claimed_by", Col::Text),
    ("bounce", Col::Text),
];

/// The columns of `events` a use-case writes, in `request.sql`'s order (the id, the
/// repeats and the feed's position are the table's own).
pub(super) const EVENT: [(&str, Col); 8] = [
    ("user_id", Col::Text),
    ("flow_id", Col::Text),
    ("event_type", Col::Text),
    ("masked_address", Col::Text),
    ("detail", Col::Text),
    ("at", Col::Int),
    ("actor", Col::Text),
    ("request_id", Col::Text),
];

/// The limits' steps `request.sql` has room for; a request that takes more runs locked.
pub(super) const REQUEST_STEPS: usize = 3;

/// At most one row as a typed parameter per column, in the order of `cols`: every one
/// NULL when there is no row (the statement then writes none).
pub(super) fn columns(row: Option<&Value>, cols: &[(&str, Col)]) -> Vec<sea_orm::Value> {
    cols.iter()
        .map(|&(name, col)| {
            let v = row.and_then(|r| r.get(name));
            match col {
                Col::Text => v.and_then(Value::as_str).map(str::to_owned).into(),
                Col::Int => v.and_then(Value::as_i64).into(),
            }
        })
        .collect()
}

/// A rate-limit step that goes out with a use-case's writes.
pub(super) struct Take {
    pub bucket: String,
    pub rate: Rate,
    pub now: i64,
    pub label: &'static str,
}

impl Take {
    /// The step as one row of the statements' steps parameter.
    pub fn row(&self) -> serde_json::Value {
        serde_json::json!({
            "bucket": self.bucket, "now": self.now, "emission": self.rate.emission_ms(),
            "period": self.rate.period_ms(), "label": self.label,
        })
    }
}
