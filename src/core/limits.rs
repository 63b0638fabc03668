//! The limits the core applies, all kept in shared database buckets (`store::limits`), so
//! they hold across replicas: requests per user, link mails per recipient, and failed
//! confirmations per client on the link pages.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::domain::{Rate, UserId};
use crate::error::{CoreError, CoreResult};
use crate::store::Tx;

use super::Core;

impl Core {
    /// Before a link page acts for `client`: refused while that client has failed too
    /// often (a brute-force guard that holds across replicas).
    pub async fn link_guard(&self, client: &str) -> CoreResult<()> {
        let bucket = bucket("ip", client);
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
        let bucket = bucket("ip", client);
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
        (bucket("user", user.as_str()), self.policy.user_rate)
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

    /// Link mails per recipient address, whatever the account asking.
    pub(super) async fn take_recipient_limit(
        &self,
        tx: &Tx,
        recipient: &str,
        now: i64,
    ) -> CoreResult<()> {
        // With the use-case's writes, in their statement (one round trip less).
        let rate = self.policy.recipient_rate;
        let step = tx
            .take_with_writes(&bucket("rcpt", recipient), rate, now, "recipient")
            .await?;
        refused_if_over(step, "recipient")
    }
}

/// RATE_LIMITED for a limit's step that did not fit (`Err(wait)`); `label` names the
/// limit in the metrics.
pub(super) fn refused_if_over(step: Result<(), Duration>, label: &'static str) -> CoreResult<()> {
    step.map_err(|retry_after| CoreError::rate_limited(retry_after, label))
}

/// The bucket of the per-user request limit (for erasure).
pub(super) fn user_bucket(user: &str) -> String {
    bucket("user", user)
}

/// The bucket of the per-recipient limit of an inbox's mailbox key (for erasure).
pub(super) fn recipient_bucket(mailbox_key: &str) -> String {
    bucket("rcpt", mailbox_key)
}

/// A rate-limit bucket key: the limit's name and a digest of what it limits (no address
/// or IP in clear in the table).
fn bucket(kind: &str, value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("{kind}:{hex}")
}
