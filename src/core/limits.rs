//! The limits the core applies, all kept in shared database buckets (`store::limits`), so
//! they hold across replicas: requests per user, link mails per recipient inbox, wrong
//! codes per user, and failed confirmations per client on the link pages. Buckets are
//! keyed by keyed digests and hold no personal data, so EraseUser keeps them (API.md,
//! release 3): an erased and re-created account starts with the quota it left with.

use std::time::Duration;

use crate::domain::{MailboxKey, Rate, UserId};
use crate::error::{CoreError, CoreResult};
use crate::store::Tx;

use super::Core;

impl Core {
    /// Before a link page acts for `client`: refused while that client has failed too
    /// often (a brute-force guard that holds across replicas).
    pub async fn link_guard(&self, client: &str) -> CoreResult<()> {
        let bucket = self.bucket(kind::CLIENT, client);
        let rate = self.policy.ip_failure_rate;
        match self.store.peek(&bucket, rate, self.now_ms()).await? {
            Ok(()) => Ok(()),
            Err(retry_after) => {
                crate::metrics::rate_limited("ip");
                Err(CoreError::LockedOut { retry_after })
            }
        }
    }

    /// Counts one failed confirmation of `client` on the link pages.
    pub async fn link_failure(&self, client: &str) {
        let bucket = self.bucket(kind::CLIENT, client);
        let rate = self.policy.ip_failure_rate;
        match self.store.take(&bucket, rate, self.now_ms()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::warn!(
                client,
                "link-page client locked out after repeated failures"
            ),
            Err(e) => tracing::warn!(error = %e, "could not count a failed confirmation"),
        }
    }

    /// The per-user limit (requests + resends), taken inside the request's transaction so
    /// an accepted request costs no extra commit; `finish_request` counts refused ones.
    pub(super) async fn take_user_limit(&self, tx: &Tx, user: &UserId, now: i64) -> CoreResult<()> {
        let (bucket, rate) = self.user_limit(user);
        refused_if_over(tx.take(&bucket, rate, now).await?, "user")
    }

    /// The per-user limit's bucket and rate (a request takes it with the user's lock).
    pub(super) fn user_limit(&self, user: &UserId) -> (String, Rate) {
        (
            self.bucket(kind::USER, user.as_str()),
            self.policy.user_rate,
        )
    }

    /// The bucket and rate of a user's wrong codes, across all their flows.
    pub(super) fn wrong_code_limit(&self, user: &UserId) -> (String, Rate) {
        (
            self.bucket(kind::WRONG_CODES, user.as_str()),
            self.policy.wrong_code_rate,
        )
    }

    /// A refused request, counted against its user on its own (what its use-case wrote,
    /// the limit's step included, is gone): `Some(wait)` when the user is over the limit.
    pub(super) async fn count_refused_request(&self, user: &UserId) -> Option<Duration> {
        let (bucket, rate) = self.user_limit(user);
        match self.store.take(&bucket, rate, self.now_ms()).await {
            Ok(step) => step.err(),
            Err(e) => {
                tracing::warn!(error = %e, "could not count a refused request against its user");
                None
            }
        }
    }

    /// A bucket's key: its kind and a keyed digest of `value` (no personal data, so
    /// erasure keeps it: erasing and starting again never restores quota).
    pub(super) fn bucket(&self, kind: &str, value: &str) -> String {
        self.keys.limit_bucket(kind, value)
    }

    /// Link mails per recipient inbox (its mailbox key), whatever the account asking.
    pub(super) async fn take_recipient_limit(
        &self,
        tx: &Tx,
        recipient: &MailboxKey,
        now: i64,
    ) -> CoreResult<()> {
        // With the use-case's writes, in their statement (one round trip less).
        let rate = self.policy.recipient_rate;
        let step = tx
            .take_with_writes(
                &self.bucket(kind::RECIPIENT, recipient.as_str()),
                rate,
                now,
                "recipient",
            )
            .await?;
        refused_if_over(step, "recipient")
    }
}

/// RATE_LIMITED for a limit's step that did not fit (`Err(wait)`); `label` names the
/// limit in the metrics.
pub(super) fn refused_if_over(step: Result<(), Duration>, label: &'static str) -> CoreResult<()> {
    step.map_err(|retry_after| CoreError::rate_limited(retry_after, label))
}

/// The kinds of bucket (`store::limits`): each key is the kind and a keyed digest of what
/// it limits (`Keyring::limit_bucket`). The short names are new in release 3: the
/// migration `m20261206_000001_keyed_limits` drops the buckets of the earlier names
/// (`user:`, `rcpt:`, `ip:`, unkeyed SHA-256 digests).
pub(super) mod kind {
    /// Requests and resends of one user (its user id).
    pub const USER: &str = "u";
    /// Link mails to one inbox (its mailbox key).
    pub const RECIPIENT: &str = "r";
    /// Failed link confirmations of one client (its IP).
    pub const CLIENT: &str = "c";
    /// Wrong codes of one user, across its flows (its user id).
    pub const WRONG_CODES: &str = "w";
}
