//! Suppression (API.md, "Delivery status, bounces, complaints, suppression"): no mail
//! goes to an inbox whose mail was refused or bounced with a 5.1.x status (for
//! `EMAILVERIFY_SUPPRESSION_TTL`) or that complained (until lifted). The requests that
//! would mail it — RequestVerification, RequestChange, Resend — answer
//! ADDRESS_UNDELIVERABLE and send nothing; LiftSuppression is support's way back.
//!
//! Who suppresses: the mail worker on a 5.1.x refusal at send time, and the inbound
//! listener on a 5.1.x bounce or a complaint. Both go through the store's `suppress`.

use crate::domain::EmailAddress;
use crate::domain::mailbox::MailboxKey;
use crate::error::{CoreError, CoreResult};
use crate::store::{Suppression, Tx};

use super::Core;

impl Core {
    /// ADDRESS_UNDELIVERABLE if any of `addresses` reaches a suppressed inbox (one read;
    /// a new flow gets the same answer from its first read, `Tx::request_read`).
    pub(super) async fn check_deliverable(
        &self,
        tx: &Tx,
        addresses: &[&str],
        now: i64,
    ) -> CoreResult<()> {
        let keys: Vec<MailboxKey> = addresses.iter().map(|a| MailboxKey::of(a)).collect();
        match tx.suppression(&keys, now).await? {
            Some(s) => Err(undeliverable(s)),
            None => Ok(()),
        }
    }

    /// LiftSuppression: support lifts the suppression of an address's inbox; NOT_SUPPRESSED
    /// when none is in force.
    #[tracing::instrument(skip_all, fields(address = %email.masked()))]
    pub async fn lift_suppression(&self, email: &EmailAddress) -> CoreResult<()> {
        let key = email.mailbox_key();
        if self.store.lift_suppression(&key, self.now_ms()).await? {
            tracing::info!("suppression lifted");
            Ok(())
        } else {
            Err(CoreError::NotSuppressed)
        }
    }
}

/// The refusal a suppression in force gives.
pub(super) fn undeliverable(s: Suppression) -> CoreError {
    CoreError::AddressUndeliverable {
        cause: s.cause.as_str(),
        until: s.until,
    }
}
