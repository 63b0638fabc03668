//! The limits the core applies, all kept in shared database buckets (`store::limits`), so
//! they hold across replicas: requests per user, link mails per recipient, and failed
//! confirmations per client on the link pages.

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
        let rate = self.policy.user_rate;
        take_in(tx, Limit::User, user.as_str(), rate, now).await
    }

    /// A refused request, counted against its user on its own (its transaction, and the
    /// limit it took there, were rolled back).
    pub(super) async fn count_refused_request(&self, user: &UserId) {
        let bucket = bucket("user", user.as_str());
        let counted = self
            .store
            .take(&bucket, self.policy.user_rate, self.now_ms())
            .await;
        if let Err(e) = counted {
            tracing::warn!(error = %e, "could not count a refused request against its user");
        }
    }

    /// Link mails per recipient address, whatever the account asking.
    pub(super) async fn take_recipient_limit(
        &self,
        tx: &Tx,
        recipient: &str,
        now: i64,
    ) -> CoreResult<()> {
        let rate = self.policy.recipient_rate;
        take_in(tx, Limit::Recipient, recipient, rate, now).await
    }
}

/// The limits taken inside a use-case's transaction.
#[derive(Clone, Copy)]
enum Limit {
    User,
    Recipient,
}

/// Takes one event of `limit` for `value` in `tx`; RATE_LIMITED when it does not fit.
async fn take_in(tx: &Tx, limit: Limit, value: &str, rate: Rate, now: i64) -> CoreResult<()> {
    let (prefix, label) = match limit {
        Limit::User => ("user", "user"),
        Limit::Recipient => ("rcpt", "recipient"),
    };
    match tx.take(&bucket(prefix, value), rate, now).await? {
        Ok(()) => Ok(()),
        Err(retry_after) => {
            crate::metrics::rate_limited(label);
            Err(CoreError::RateLimited { retry_after })
        }
    }
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
