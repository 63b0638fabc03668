//! RequestVerification (sign-up / add email: the address recorded unverified, a one-time
//! link and code mailed to it) and RequestChange (a verified address changed in two
//! steps: a link to the CURRENT address first; when it is confirmed, a link to the NEW
//! one, `confirm.rs`; without a verified address it is exactly RequestVerification).
//! They share their start: the user's row created or locked with the per-user limit's
//! step in one statement, then the request's own rules, then `start_flow` (`flows.rs`);
//! first optimistically (`Store::attempts`).

use crate::domain::{EmailAddress, FlowKind, Locale, UserId};
use crate::error::{CoreError, CoreResult};
use crate::store::entity::user;
use crate::store::{Attempt, Tx};

use super::flows::FlowRequest;
use super::{Core, FlowView};

/// Which request `Core::request` serves.
enum Wanted {
    Verification,
    Change,
}

impl Core {
    #[tracing::instrument(skip_all, fields(user_id = %user, to = %email.masked()))]
    pub async fn request_verification(
        &self,
        user: &UserId,
        email: &EmailAddress,
        locale: Option<Locale>,
    ) -> CoreResult<FlowView> {
        self.request(user, email, locale, Wanted::Verification)
            .await
    }

    /// RequestVerification's rules for the locked user `row`, inside the caller's
    /// transaction (RequestChange without a verified address comes here too).
    async fn verify_in(
        &self,
        tx: &Tx,
        row: &user::Model,
        email: &EmailAddress,
        locale: Option<Locale>,
        now: i64,
    ) -> CoreResult<FlowView> {
        // Order (API.md): the user's own address first, then EMAIL_TAKEN (in start_flow).
        if row.email_verified {
            return Err(if row.email.as_deref() == Some(email.as_str()) {
                CoreError::EmailAlreadyVerified
            } else {
                CoreError::UseChangeFlow
            });
        }
        let user = UserId::from_trusted(row.user_id.clone());
        let request = FlowRequest {
            user: &user,
            kind: FlowKind::Verify,
            new_email: email,
            old_email: None,
            locale,
        };
        self.start_flow(tx, request, now).await
    }

    #[tracing::instrument(skip_all, fields(user_id = %user, to = %new_email.masked()))]
    pub async fn request_change(
        &self,
        user: &UserId,
        new_email: &EmailAddress,
        locale: Option<Locale>,
    ) -> CoreResult<FlowView> {
        self.request(user, new_email, locale, Wanted::Change).await
    }

    /// RequestChange's rules for the locked user `row`, inside the caller's transaction.
    async fn change_in(
        &self,
        tx: &Tx,
        row: &user::Model,
        new_email: &EmailAddress,
        locale: Option<Locale>,
        now: i64,
    ) -> CoreResult<FlowView> {
        let current = match (&row.email, row.email_verified) {
            (Some(current), true) => EmailAddress::from_trusted(current.clone()),
            _ => return self.verify_in(tx, row, new_email, locale, now).await,
        };
        if current == *new_email {
            return Err(CoreError::SameEmail);
        }
        if let Some(until) = row.change_frozen_until.filter(|until| *until > now) {
            return Err(CoreError::ChangeFrozen { until });
        }
        let user = UserId::from_trusted(row.user_id.clone());
        let request = FlowRequest {
            user: &user,
            kind: FlowKind::Change,
            new_email,
            old_email: Some(&current),
            locale,
        };
        self.start_flow(tx, request, now).await
    }

    /// RequestVerification and RequestChange: the user's row is created or locked, the
    /// per-user limit taken, then the request's own rules run, all in one transaction
    /// (first optimistically: `Store::attempts`).
    async fn request(
        &self,
        user: &UserId,
        email: &EmailAddress,
        locale: Option<Locale>,
        wanted: Wanted,
    ) -> CoreResult<FlowView> {
        self.store
            .attempts("request", |attempt| {
                self.request_as(attempt, user, email, locale, &wanted)
            })
            .await
    }

    /// One try of `request`.
    async fn request_as(
        &self,
        attempt: Attempt<'_>,
        user: &UserId,
        email: &EmailAddress,
        locale: Option<Locale>,
        wanted: &Wanted,
    ) -> CoreResult<FlowView> {
        let now = self.now_ms();
        let tx = attempt.begin().await?;
        // The user's lock and the per-user limit's step: one statement.
        let (bucket, rate) = self.user_limit(user);
        let (row, step) = tx
            .create_or_lock_user_taking(user, email, now, &bucket, rate)
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
