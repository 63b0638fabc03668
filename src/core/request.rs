//! RequestVerification and RequestChange share their start: the user's row created or
//! locked with the per-user limit's step in one statement, then the request's own rules
//! (`verify.rs`, `change.rs`), then `start_flow` (`flows.rs`); first optimistically.

use crate::domain::{EmailAddress, Locale, UserId};
use crate::error::{CoreError, CoreResult};

use super::{Core, FlowView};

/// Which request `Core::request` serves.
pub(super) enum Wanted {
    Verification,
    Change,
}

impl Core {
    /// RequestVerification and RequestChange: the user's row is created or locked, the
    /// per-user limit taken, then the request's own rules run, all in one transaction
    /// (first optimistically: `Core::attempts`).
    pub(super) async fn request(
        &self,
        user: &UserId,
        email: &EmailAddress,
        locale: Option<Locale>,
        wanted: Wanted,
    ) -> CoreResult<FlowView> {
        self.attempts("request", |optimistic| {
            self.request_as(optimistic, user, email, locale, &wanted)
        })
        .await
    }

    async fn request_as(
        &self,
        optimistic: bool,
        user: &UserId,
        email: &EmailAddress,
        locale: Option<Locale>,
        wanted: &Wanted,
    ) -> CoreResult<FlowView> {
        let now = self.now_ms();
        let tx = self.store.begin_as(optimistic).await?;
        // The user's lock and the per-user limit's step: one statement.
        let (bucket, rate) = self.user_limit(user);
        let (row, step) = tx
            .create_or_lock_user_taking(user.as_str(), email.as_str(), now, &bucket, rate)
            .await?;
        let result = async {
            if let Err(wait) = step {
                // A suppressed inbox says so before any limit (release 3, "Precedence").
                // The inboxes the request's own read would look at (`start_flow`): the
                // new address, and for a change the current one its first link goes to.
                let mut inboxes = vec![email.as_str()];
                if let (Wanted::Change, Some(current), true) =
                    (wanted, &row.email, row.email_verified)
                {
                    inboxes.push(current.as_str());
                }
                self.check_deliverable(&tx, &inboxes, now).await?;
                return Err(CoreError::rate_limited(wait, "user"));
            }
            match wanted {
                Wanted::Verification => self.verify_in(&tx, &row, email, locale, now).await,
                Wanted::Change => self.change_in(&tx, &row, email, locale, now).await,
            }
        }
        .await;
        self.finish_request(tx, user, result).await
    }
}
