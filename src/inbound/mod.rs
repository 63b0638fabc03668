//! Bounces and complaints coming back (API.md, "Delivery status, bounces, complaints,
//! suppression").
//!
//! - `tag_of`: with `EMAILVERIFY_BOUNCE_ADDRESS` set, every mail's envelope sender is that
//!   address tagged with the mail's id (`bounces+<id>@domain`, `mail::message::envelope_sender`),
//!   so a bounce names the mail it is about;
//! - (`domain::status` reads the RFC 3463 status, `5.1.1`, in an SMTP reply or a report;)
//! - `smtp.rs`: the listener on `EMAILVERIFY_INBOUND_ADDR`, a minimal SMTP server that
//!   takes mail for the bounce address (any tag) and nothing else;
//! - `report.rs`: DSNs (RFC 3464) and complaint reports (RFC 5965 ARF), parsed;
//! - `Inbound::receive`: what a report does. Matched to its mail by the tag, else by the
//!   original Message-ID: `Action: failed` marks the mail bounced (event `mail_bounced`;
//!   a 5.1.x status suppresses the address for the TTL), `Action: delayed` records
//!   `mail_delayed`, a complaint records `mail_complained` and suppresses the address until
//!   lifted. Whatever matches nothing or cannot be read is accepted all the same (so no
//!   relay retries it) and counted in metrics.

pub mod report;
pub mod smtp;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, duration_ms};
use crate::core::scrub;
use crate::domain::EventType;
use crate::domain::mailbox::MailboxKey;
use crate::domain::mask::mask;
use crate::error::CoreResult;
use crate::store::entity::outbox;
use crate::store::{Store, SuppressionCause};
use report::{Original, Report};

/// What the listener hands each received message to.
pub struct Inbound {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// The bounce address; recipients are accepted only for it (any tag).
    pub bounce: lettre::Address,
    pub suppression_ttl: Duration,
}

impl Inbound {
    /// Whether the listener takes mail for `address`: the bounce address, any `+tag`.
    pub fn accepts(&self, address: &str) -> bool {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let base = |l: &str| l.split_once('+').map_or(l, |(b, _)| b).to_ascii_lowercase();
        domain.eq_ignore_ascii_case(self.bounce.domain()) && base(local) == base(self.bounce.user())
    }

    /// Acts on one received message, sent to `recipients`. `Err` only when the database
    /// failed (the listener answers 451 and the relay tries again later).
    pub async fn receive(&self, recipients: &[String], raw: &[u8]) -> CoreResult<&'static str> {
        let outcome = match report::parse(raw) {
            None => "unparseable",
            Some(report) => {
                let original = match &report {
                    Report::Delivery { original, .. } | Report::Complaint { original, .. } => {
                        original
                    }
                };
                match self.mail_of(recipients, original).await? {
                    None => "unmatched",
                    Some(mail) => self.apply(&report, &mail).await?,
                }
            }
        };
        crate::metrics::inbound_report(outcome);
        tracing::info!(outcome, "inbound report");
        Ok(outcome)
    }

    /// The mail a report is about: by the tag it was sent to (or, in a complaint, the
    /// original envelope sender's tag), else by the original Message-ID.
    async fn mail_of(
        &self,
        recipients: &[String],
        original: &Original,
    ) -> CoreResult<Option<outbox::Model>> {
        let tags = recipients
            .iter()
            .map(String::as_str)
            .chain(original.mail_from.as_deref())
            .filter_map(tag_of);
        let by_id = original
            .message_id
            .as_deref()
            .and_then(|id| id.split_once('@').map(|(left, _)| left));
        for id in tags.chain(by_id) {
            if let Some(mail) = self.store.mail(id).await? {
                return Ok(Some(mail));
            }
        }
        Ok(None)
    }

    async fn apply(&self, report: &Report, mail: &outbox::Model) -> CoreResult<&'static str> {
        let now = self.clock.now_ms();
        let masked = mask(&mail.recipient);
        match report {
            Report::Complaint { feedback_type, .. } => {
                self.store
                    .mail_event(mail, EventType::MailComplained, feedback_type, now, &masked)
                    .await?;
                self.suppress(mail, SuppressionCause::Complained, feedback_type, now)
                    .await?;
                Ok("complained")
            }
            Report::Delivery { recipients, .. } => {
                let Some(r) = recipients
                    .iter()
                    .find(|r| r.action == "failed" || r.action == "delayed")
                else {
                    return Ok("ignored");
                };
                let detail = scrub(format!("{} {}", r.status, r.diagnostic).trim());
                let detail: String = detail.chars().take(200).collect();
                if r.action == "delayed" {
                    self.store
                        .mail_event(mail, EventType::MailDelayed, &detail, now, &masked)
                        .await?;
                    return Ok("delayed");
                }
                if !r.status.starts_with("5.") {
                    return Ok("ignored");
                }
                if mail.bounce.is_none() {
                    self.store.mail_bounced(mail, &detail, now, &masked).await?;
                }
                if crate::domain::status::suppresses(&r.status) {
                    self.suppress(mail, SuppressionCause::Bounced, &r.status, now)
                        .await?;
                }
                Ok("bounced")
            }
        }
    }

    async fn suppress(
        &self,
        mail: &outbox::Model,
        cause: SuppressionCause,
        detail: &str,
        now: i64,
    ) -> CoreResult<()> {
        let key = MailboxKey::of(&mail.recipient);
        let until = now + duration_ms(self.suppression_ttl);
        self.store
            .suppress(key.as_str(), cause, Some(until), detail, now)
            .await?;
        tracing::warn!(to = %mask(&mail.recipient), cause = cause.as_str(), "address suppressed");
        Ok(())
    }
}

/// The mail id a bounce address carries as its tag: `bounces+<id>@…` → `<id>`.
pub fn tag_of(address: &str) -> Option<&str> {
    let (local, _) = address.rsplit_once('@')?;
    let (_, tag) = local.split_once('+')?;
    (!tag.is_empty()).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_sender_is_the_bounce_address_tagged_with_the_mail() {
        let bounce: lettre::Address = "bounces@mail.wallet.example".parse().unwrap();
        let id = "0193a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b";
        let sender = crate::mail::message::envelope_sender(Some(&bounce), id).unwrap();
        assert_eq!(
            sender.to_string(),
            format!("bounces+{id}@mail.wallet.example")
        );
        assert_eq!(tag_of(sender.as_ref()), Some(id));
        assert_eq!(crate::mail::message::envelope_sender(None, id), None);
        assert_eq!(tag_of("bounces@mail.wallet.example"), None);
    }
}
