//! Bounces and complaints coming back (API.md, "Delivery status, bounces, complaints,
//! suppression"; release 3, "The bounce listener is not a pen").
//!
//! - every mail's envelope sender is the bounce address tagged with the mail's **tag**
//!   (`bounces+<tag>@domain`), and its Message-ID is `<tag@from-domain>`: the tag is the
//!   mail's id with 128 bits of MAC under a key derived from the token keys
//!   (`mail::message::mail_tag`), so only we can make one, and knowing a flow's or a mail's
//!   id does not help forge a report;
//! - (`domain::status` reads the RFC 3463 status, `5.1.1`, in an SMTP reply or a report;)
//! - `smtp.rs`: the listener on `EMAILVERIFY_INBOUND_ADDR`, a minimal SMTP server that
//!   takes mail for the bounce address (any tag) and nothing else, bounded per peer;
//! - `report.rs`: DSNs (RFC 3464) and complaint reports (RFC 5965 ARF), parsed;
//! - `Inbound::receive`: what a report does. Matched to its mail ONLY by a tag whose MAC
//!   holds (the tag it was sent to, a complaint's original envelope sender's, or the
//!   original Message-ID's): `Action: failed` marks the mail bounced (event
//!   `mail_bounced`; a 5.1.x status suppresses the address for the TTL), `Action:
//!   delayed` records `mail_delayed`, a complaint records `mail_complained` and suppresses
//!   the address until lifted. Each at most once per mail (repeats are counted, not
//!   written), and what is written is the enhanced status code and a fixed word, never
//!   text from the report. Whatever matches nothing or cannot be read is accepted all the
//!   same (so no relay retries it) and counted in metrics; a peer that sends too much of
//!   it is throttled by the listener.

pub mod peers;
pub mod report;
pub mod smtp;
mod wire;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::{Clock, duration_ms};
use crate::domain::mailbox::MailboxKey;
use crate::domain::mask::mask;
use crate::domain::status::report_detail as detail;
use crate::domain::{EventType, Keyring, MailId};
use crate::error::CoreResult;
use crate::mail::message::mail_of_tag;
use crate::settings::BounceConfig;
use crate::store::entity::outbox;
use crate::store::{Store, SuppressionCause};
use report::{Original, Report};

/// Reports of one kind about one mail recently recorded, remembered so a flood of repeats
/// costs no database work; forgotten wholesale past this many.
const REMEMBERED: usize = 10_000;

/// What the listener hands each received message to.
pub struct Inbound {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// The token keys: a report's tag must carry a MAC made with one of them.
    pub keys: Keyring,
    /// The bounce address; recipients are accepted only for it (any tag).
    pub bounce: lettre::Address,
    pub suppression_ttl: Duration,
    /// Sessions one peer may hold at once.
    pub max_sessions_per_peer: usize,
    /// A session that makes no progress for this long is closed.
    pub silence_timeout: Duration,
    /// Set: STARTTLS is offered.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The peers' sessions and unmatched reports (`smtp.rs`).
    pub(crate) peers: Arc<peers::Peers>,
    /// `(mail id, outcome)` of reports already recorded.
    recorded: Mutex<HashSet<(String, &'static str)>>,
}

impl Inbound {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        keys: Keyring,
        bounce: lettre::Address,
        config: &BounceConfig,
    ) -> Self {
        Self {
            store,
            clock,
            keys,
            bounce,
            suppression_ttl: config.suppression_ttl,
            max_sessions_per_peer: config.inbound_max_sessions_per_peer,
            silence_timeout: config.inbound_silence_timeout,
            tls: config
                .inbound_tls
                .as_ref()
                .map(|t| tokio_rustls::TlsAcceptor::from(t.0.clone())),
            peers: Arc::default(),
            recorded: Mutex::new(HashSet::new()),
        }
    }

    /// Whether the listener takes mail for `address`: the bounce address, any `+tag`.
    pub fn accepts(&self, address: &str) -> bool {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let base = |l: &str| l.split_once('+').map_or(l, |(b, _)| b).to_ascii_lowercase();
        domain.eq_ignore_ascii_case(self.bounce.domain()) && base(local) == base(self.bounce.user())
    }

    /// Acts on one received message, sent to `recipients`; the outcome as counted in
    /// metrics (`unparseable` and `unmatched` are what the listener throttles). `Err` only
    /// when the database failed (the listener answers 451 and the relay tries again later).
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
    /// original envelope sender's tag), else by the original Message-ID's left part, which
    /// is the same tag. Only a tag whose MAC holds is looked up.
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
        let mut tried = HashSet::new();
        for id in tags.chain(by_id).filter_map(|t| mail_of_tag(&self.keys, t)) {
            if !tried.insert(id.clone()) {
                continue;
            }
            if let Some(mail) = self.store.mail(&MailId::from_trusted(id)).await? {
                return Ok(Some(mail));
            }
        }
        Ok(None)
    }

    async fn apply(&self, report: &Report, mail: &outbox::Model) -> CoreResult<&'static str> {
        let now = self.clock.now_ms();
        let (event, detail, cause, outcome) = match report {
            Report::Complaint { .. } => (
                EventType::MailComplained,
                "complained".to_owned(),
                Some(SuppressionCause::Complained),
                "complained",
            ),
            Report::Delivery { recipients, .. } => {
                let Some(r) = recipients
                    .iter()
                    .find(|r| r.action == "failed" || r.action == "delayed")
                else {
                    return Ok("ignored");
                };
                if r.action == "delayed" {
                    (
                        EventType::MailDelayed,
                        detail(&r.status, "delayed"),
                        None,
                        "delayed",
                    )
                } else if r.status.starts_with("5.") {
                    let suppresses = crate::domain::status::suppresses(&r.status);
                    (
                        EventType::MailBounced,
                        detail(&r.status, "bounced"),
                        suppresses.then_some(SuppressionCause::Bounced),
                        "bounced",
                    )
                } else {
                    return Ok("ignored");
                }
            }
        };
        let seen = (mail.mail_id.clone(), outcome);
        if self.recorded.lock().expect("recorded").contains(&seen) {
            return Ok("repeat");
        }
        let key = MailboxKey::of(&mail.recipient);
        let until = now + duration_ms(self.suppression_ttl);
        let suppress = cause.map(|c| (&key, c, Some(until)));
        let masked = mask(&mail.recipient);
        let written = self
            .store
            .mail_reported(mail, event, &detail, suppress, now, &masked)
            .await?;
        {
            let mut recorded = self.recorded.lock().expect("recorded");
            if recorded.len() >= REMEMBERED {
                recorded.clear();
            }
            recorded.insert(seen);
        }
        if !written {
            return Ok("repeat");
        }
        if let Some(cause) = cause {
            tracing::warn!(to = %masked, cause = cause.as_str(), "address suppressed");
        }
        Ok(outcome)
    }
}

/// The tag a bounce address carries: `bounces+<tag>@…` → `<tag>`.
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
        let keys = Keyring::new(vec![vec![7u8; 32]]).unwrap();
        let id = "0193a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b";
        let tag = crate::mail::message::mail_tag(&keys, id).unwrap();
        let sender = crate::mail::message::envelope_sender(Some(&bounce), &tag).unwrap();
        assert_eq!(
            sender.to_string(),
            format!("bounces+{tag}@mail.wallet.example")
        );
        assert_eq!(tag_of(sender.as_ref()), Some(tag.as_str()));
        assert_eq!(mail_of_tag(&keys, &tag).as_deref(), Some(id));
        assert_eq!(crate::mail::message::envelope_sender(None, &tag), None);
        assert_eq!(tag_of("bounces@mail.wallet.example"), None);
    }

    #[test]
    fn details_hold_a_status_code_and_a_fixed_word_only() {
        assert_eq!(detail("4.4.1", "delayed"), "4.4.1 delayed");
        assert_eq!(detail("5.1.1", "bounced"), "5.1.1 bounced");
        assert_eq!(detail("", "delayed"), "delayed");
        assert_eq!(
            detail("URGENT call +1-555-0100 jane＠victim.example", "delayed"),
            "delayed"
        );
    }
}
