//! The service core: every rule of the contract lives here, named after the RPCs.
//! Both front doors (gRPC and the HTTP link shim) call these methods in-process.
//!
//! Each use-case runs in ONE database transaction that also queues the mail it causes
//! (transactional outbox): a committed request always gets its email, a failed one never
//! does. The delivery worker (`mail::outbox`) is woken after each commit.

pub mod clock;
pub mod context;
pub mod error;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use sha2::{Digest, Sha256};

use crate::domain::email::mask;
use crate::domain::token::generate_code;
use crate::domain::{
    EmailAddress, FlowKind, FlowState, FlowStep, Keyring, Locale, Outcome, Rate, Token, UserId,
};
use crate::mail::templates::{MailParams, Secrets, Template};
use crate::store::entity::{event, flow, token};
use crate::store::{NewEvent, NewMail, NewToken, Store, TOKEN_SUPERSEDED, TOKEN_USED, Tx};
use clock::{Clock, duration_ms};
pub use error::{CoreError, CoreResult};

/// The tunable rules (from settings).
#[derive(Debug, Clone)]
pub struct Policy {
    pub verify_ttl: Duration,
    pub change_ttl: Duration,
    pub resend_cooldown: Duration,
    /// Base of links in emails, without a trailing slash.
    pub public_url: String,
    /// Requests and resends per user.
    pub user_rate: Rate,
    /// Link mails per recipient address, whatever the account asking.
    pub recipient_rate: Rate,
    /// Failed link confirmations per client IP on the link pages.
    pub ip_failure_rate: Rate,
    /// How long RequestChange is refused after a "this wasn't me" report.
    pub change_freeze: Duration,
    /// Named in the change notice as whom to contact.
    pub support_contact: String,
}

/// Wrong codes allowed per flow; the next one locks it.
pub const MAX_WRONG_CODES: i32 = 5;
/// How long a flow's codes stay locked after the last allowed wrong code.
pub const CODE_LOCK: Duration = Duration::from_secs(15 * 60);
/// Largest page of ListEvents.
pub const MAX_PAGE: u64 = 200;

/// What callers see of a flow: the current step's link, masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowView {
    pub flow_id: String,
    pub kind: FlowKind,
    pub step: FlowStep,
    pub masked_recipient: String,
    pub expires_at: i64,
    pub resend_available_at: i64,
}

#[derive(Debug, Clone)]
pub struct Confirmation {
    pub user_id: String,
    pub flow: FlowView,
    pub outcome: Outcome,
    /// The user's address of record after the confirmation.
    pub email: String,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub email: Option<String>,
    pub email_verified: bool,
    pub verified_at: Option<i64>,
    pub pending: Option<FlowView>,
}

/// What `retry_dead_mail` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryReport {
    /// Notices queued again as they were.
    pub requeued: u32,
    /// Link mails replaced by a fresh link for their pending flow.
    pub relinked: u32,
    /// Link mails whose flow has ended: nothing to send.
    pub left_dead: u32,
}

/// One line of the audit trail as support staff see it.
#[derive(Debug, Clone)]
pub struct EventView {
    pub event_type: String,
    pub at: i64,
    pub flow_id: String,
    pub masked_address: String,
    pub detail: String,
}

pub struct Core {
    store: Store,
    keys: Keyring,
    clock: Arc<dyn Clock>,
    policy: Policy,
    mail_ready: Arc<Notify>,
}

impl Core {
    pub fn new(
        store: Store,
        keys: Keyring,
        clock: Arc<dyn Clock>,
        policy: Policy,
        mail_ready: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            keys,
            clock,
            policy,
            mail_ready,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Sign-up / add email: records the address unverified and mails a link to it.
    #[tracing::instrument(skip_all, fields(user_id = %user, to = %email.masked()))]
    pub async fn request_verification(
        &self,
        user: &UserId,
        email: &EmailAddress,
        locale: Locale,
    ) -> CoreResult<FlowView> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        let Some(row) = tx.lock_user(user.as_str(), true, now).await? else {
            return Err(CoreError::Internal(anyhow::anyhow!(
                "user row vanished inside its transaction"
            )));
        };
        let result = match self.take_user_limit(&tx, user, now).await {
            Ok(()) => self.verify_in(&tx, user, &row, email, locale, now).await,
            Err(e) => Err(e),
        };
        self.finish_request(tx, user, result).await
    }

    /// Change a verified address in two steps; without a verified address it is exactly
    /// `request_verification`.
    #[tracing::instrument(skip_all, fields(user_id = %user, to = %new_email.masked()))]
    pub async fn request_change(
        &self,
        user: &UserId,
        new_email: &EmailAddress,
        locale: Locale,
    ) -> CoreResult<FlowView> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        let Some(row) = tx.lock_user(user.as_str(), true, now).await? else {
            return Err(CoreError::Internal(anyhow::anyhow!(
                "user row vanished inside its transaction"
            )));
        };
        if let Err(e) = self.take_user_limit(&tx, user, now).await {
            return self.finish_request(tx, user, Err(e)).await;
        }
        let current = match (&row.email, row.email_verified) {
            (Some(current), true) => current.clone(),
            _ => {
                let result = self
                    .verify_in(&tx, user, &row, new_email, locale, now)
                    .await;
                return self.finish_request(tx, user, result).await;
            }
        };
        let result = async {
            if current == new_email.as_str() {
                return Err(CoreError::SameEmail);
            }
            if let Some(until) = row.change_frozen_until.filter(|until| *until > now) {
                return Err(CoreError::ChangeFrozen { until });
            }
            let pending = self.pending_unless_taken(&tx, user, new_email).await?;
            if let Some(p) = &pending
                && p.kind == FlowKind::Change.as_str()
                && p.new_email == new_email.as_str()
                && p.expires_at > now
            {
                // A retry of the same request: same flow, no second email.
                return Ok(self.view(p));
            }
            if let Some(p) = pending {
                self.supersede(&tx, &p, now).await?;
            }
            let mut f = new_flow(
                user,
                FlowKind::Change,
                new_email,
                Some(&current),
                locale,
                now,
            );
            // The link first, so the flow row is written once, complete.
            self.send_link(&tx, &mut f, FlowStep::ConfirmCurrent, now)
                .await?;
            tx.insert_flow(f.clone()).await?;
            crate::metrics::flow_requested("change");
            self.event(
                &tx,
                user.as_str(),
                Some(&f.flow_id),
                "change_requested",
                &mask(&current),
                "",
                now,
            )
            .await?;
            Ok(self.view(&f))
        }
        .await;
        self.finish_request(tx, user, result).await
    }

    /// Consumes a one-time token from a link and advances its flow.
    #[tracing::instrument(skip_all)]
    pub async fn confirm_link(&self, token: &Token) -> CoreResult<Confirmation> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        let (tx, tok, f) = self.live_token(tx, token, now).await?;
        let user = UserId::from_trusted(f.user_id.clone());
        // Lock order user → flow → token, as every use-case.
        let Some(user_row) = tx.lock_user(user.as_str(), false, now).await? else {
            return Err(CoreError::Internal(anyhow::anyhow!("flow without user")));
        };
        if !tx.consume_token(&tok.digest, now).await? {
            // Someone else consumed it between our read and our update.
            return Err(CoreError::TokenUsed);
        }
        let result = self.advance(&tx, &user, &user_row.email, f, now).await;
        let confirmation = self.finish(tx, &user, result).await?;
        crate::metrics::confirmed(outcome_name(confirmation.outcome), "link");
        Ok(confirmation)
    }

    /// Sends the current step's link again; earlier tokens of that step stop working.
    #[tracing::instrument(skip_all, fields(user_id = %user))]
    pub async fn resend(&self, user: &UserId) -> CoreResult<FlowView> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        if tx.lock_user(user.as_str(), false, now).await?.is_none() {
            return Err(CoreError::NoPendingFlow);
        }
        // Nothing pending costs no quota, for a known user as for an unknown one: the
        // answer must not tell them apart.
        let Some(f) = tx.pending_flow(user.as_str()).await? else {
            return self.finish(tx, user, Err(CoreError::NoPendingFlow)).await;
        };
        let result = async {
            self.take_user_limit(&tx, user, now).await?;
            self.resend_in(&tx, f, now).await
        }
        .await;
        self.finish_request(tx, user, result).await
    }

    /// The link page's "Send me a new link": resends the current step of the token's flow,
    /// whatever the token's own state, while that flow is pending.
    #[tracing::instrument(skip_all)]
    pub async fn resend_by_token(&self, token: &Token) -> CoreResult<FlowView> {
        let now = self.now_ms();
        let (tx, user, tok) = self.lock_token_owner(token, now).await?;
        let result = async {
            let f = self.pending_flow_of(&tx, &tok).await?;
            self.resend_in(&tx, f, now).await
        }
        .await;
        self.finish(tx, &user, result).await
    }

    /// Cancels the user's pending flow of either kind; its tokens stop working.
    #[tracing::instrument(skip_all, fields(user_id = %user))]
    pub async fn cancel(&self, user: &UserId) -> CoreResult<()> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        if tx.lock_user(user.as_str(), false, now).await?.is_none() {
            return Err(CoreError::NoPendingFlow);
        }
        let result = async {
            let f = tx
                .pending_flow(user.as_str())
                .await?
                .ok_or(CoreError::NoPendingFlow)?;
            self.end_flow(&tx, &f, FlowState::Cancelled, now).await?;
            self.event(
                &tx,
                user.as_str(),
                Some(&f.flow_id),
                "flow_cancelled",
                "",
                "by_caller",
                now,
            )
            .await
        }
        .await;
        self.finish(tx, user, result).await
    }

    /// "This wasn't me": cancels the token's flow while it is pending, whatever the
    /// token's own state (an expired or used link still proves the mail was received).
    #[tracing::instrument(skip_all)]
    pub async fn cancel_by_token(&self, token: &Token) -> CoreResult<FlowView> {
        let now = self.now_ms();
        let (tx, user, tok) = self.lock_token_owner(token, now).await?;
        let result = async {
            let f = self.pending_flow_of(&tx, &tok).await?;
            self.end_flow(&tx, &f, FlowState::Cancelled, now).await?;
            if kind_of(&f.kind) == FlowKind::Change {
                // Someone else asked to take this account's address: hold further changes
                // until the owner has had time to react.
                tx.freeze_changes(user.as_str(), now + duration_ms(self.policy.change_freeze))
                    .await?;
            }
            let masked = mask(recipient_of(&f, step_of(&tok.step)));
            self.event(
                &tx,
                user.as_str(),
                Some(&f.flow_id),
                "change_reported",
                &masked,
                "this_was_not_me",
                now,
            )
            .await?;
            Ok(self.view(&f))
        }
        .await;
        self.finish(tx, &user, result).await
    }

    /// What `GET /verify` shows: the flow of a live token, or the error a POST would give.
    /// Reads only: a mail scanner fetching the link changes nothing.
    pub async fn inspect_token(&self, token: &Token) -> CoreResult<FlowView> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        let (_, f) = self
            .live_token_readonly(&tx, token, now)
            .await
            .map_err(|(e, _)| e)?;
        Ok(self.view(&f))
    }

    /// Reads a user's email state.
    pub async fn status(&self, user: &UserId) -> CoreResult<Status> {
        let row = self
            .store
            .user(user.as_str())
            .await?
            .ok_or(CoreError::UserNotFound)?;
        let pending = self.store.pending_flow(user.as_str()).await?;
        Ok(Status {
            email: row.email,
            email_verified: row.email_verified,
            verified_at: if row.email_verified {
                row.verified_at
            } else {
                None
            },
            pending: pending.as_ref().map(|f| self.view(f)),
        })
    }

    /// Confirms the current step with the 6-digit code of its mail. Wrong codes count
    /// against the flow (committed, so they survive restarts); the 5th locks its codes for
    /// 15 minutes. The link of the same mail keeps working: it carries 256 bits, not 20.
    #[tracing::instrument(skip_all, fields(user_id = %user))]
    pub async fn confirm_code(&self, user: &UserId, code: &str) -> CoreResult<Confirmation> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        let Some(row) = tx.lock_user(user.as_str(), false, now).await? else {
            return Err(CoreError::NoPendingFlow);
        };
        let Some(mut f) = tx.pending_flow(user.as_str()).await? else {
            return self.finish(tx, user, Err(CoreError::NoPendingFlow)).await;
        };
        if let Some(until) = f.locked_until {
            if until > now {
                let e = CoreError::LockedOut {
                    retry_after: Duration::from_millis((until - now) as u64),
                };
                return self.finish(tx, user, Err(e)).await;
            }
            // The lock has run out: a fresh set of attempts.
            f.locked_until = None;
            f.failed_codes = 0;
        }
        let step = step_of(&f.step);
        let tok = match tx.live_token(&f.flow_id, step.as_str()).await? {
            Some(t) if t.expires_at > now => t,
            _ => return self.finish(tx, user, Err(CoreError::TokenExpired)).await,
        };
        let stored = tok.code_digest.clone().unwrap_or_default();
        if !self.keys.code_matches(&tok.digest, code, &stored) {
            f.failed_codes += 1;
            f.updated_at = now;
            let err = if f.failed_codes >= MAX_WRONG_CODES {
                f.locked_until = Some(now + duration_ms(CODE_LOCK));
                crate::metrics::rate_limited("code");
                self.event(
                    &tx,
                    user.as_str(),
                    Some(&f.flow_id),
                    "code_locked",
                    "",
                    "LOCKED_OUT",
                    now,
                )
                .await?;
                CoreError::LockedOut {
                    retry_after: CODE_LOCK,
                }
            } else {
                self.event(
                    &tx,
                    user.as_str(),
                    Some(&f.flow_id),
                    "code_mismatch",
                    "",
                    "CODE_MISMATCH",
                    now,
                )
                .await?;
                CoreError::CodeMismatch {
                    attempts_left: (MAX_WRONG_CODES - f.failed_codes) as u32,
                }
            };
            // The count must stick: commit it, then refuse.
            tx.update_flow(&f).await?;
            tx.commit().await?;
            return Err(err);
        }
        if !tx.consume_token(&tok.digest, now).await? {
            return Err(CoreError::TokenUsed);
        }
        f.failed_codes = 0;
        let result = self.advance(&tx, user, &row.email, f, now).await;
        let confirmation = self.finish(tx, user, result).await?;
        crate::metrics::confirmed(outcome_name(confirmation.outcome), "code");
        Ok(confirmation)
    }

    /// The user's audit trail, newest first. `page_token` is the opaque cursor of the
    /// previous page.
    pub async fn list_events(
        &self,
        user: &UserId,
        page_size: i32,
        page_token: &str,
    ) -> CoreResult<(Vec<EventView>, String)> {
        let before = if page_token.is_empty() {
            None
        } else {
            Some(decode_cursor(page_token).ok_or(CoreError::InvalidPageToken)?)
        };
        if self.store.user(user.as_str()).await?.is_none() {
            return Err(CoreError::UserNotFound);
        }
        let size = if page_size <= 0 {
            50
        } else {
            (page_size as u64).min(MAX_PAGE)
        };
        // One more than asked tells whether there is a next page.
        let mut rows: Vec<event::Model> =
            self.store.events(user.as_str(), before, size + 1).await?;
        let next = if rows.len() as u64 > size {
            rows.truncate(size as usize);
            rows.last()
                .map(|r| encode_cursor(r.event_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let events = rows
            .into_iter()
            .map(|r| EventView {
                event_type: r.event_type,
                at: r.at,
                flow_id: r.flow_id.unwrap_or_default(),
                masked_address: r.masked_address,
                detail: r.detail,
            })
            .collect();
        Ok((events, next))
    }

    /// Before a link page acts for `client`: refused while that client has failed too
    /// often (a brute-force guard that holds across replicas).
    pub async fn link_guard(&self, client: &str) -> CoreResult<()> {
        match self
            .store
            .peek(
                &bucket("ip", client),
                self.policy.ip_failure_rate,
                self.now_ms(),
            )
            .await?
        {
            Ok(()) => Ok(()),
            Err(retry_after) => {
                crate::metrics::rate_limited("ip");
                Err(CoreError::LockedOut { retry_after })
            }
        }
    }

    /// Counts one failed confirmation of `client` on the link pages.
    pub async fn link_failure(&self, client: &str) {
        let result = self
            .store
            .take(
                &bucket("ip", client),
                self.policy.ip_failure_rate,
                self.now_ms(),
            )
            .await;
        match result {
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
    async fn take_user_limit(&self, tx: &Tx, user: &UserId, now: i64) -> CoreResult<()> {
        match tx
            .take(&bucket("user", user.as_str()), self.policy.user_rate, now)
            .await?
        {
            Ok(()) => Ok(()),
            Err(retry_after) => {
                crate::metrics::rate_limited("user");
                Err(CoreError::RateLimited { retry_after })
            }
        }
    }

    /// `emailverify outbox retry-dead`: gives every dead mail another chance. A notice is
    /// queued again as it was. A link mail's link was erased when it died, so while its flow
    /// is still pending the current step gets a fresh link (as a resend, without the
    /// cooldown); a link mail of a flow that has ended is left dead.
    pub async fn retry_dead_mail(&self) -> CoreResult<RetryReport> {
        let mut report = RetryReport::default();
        for mail in self.store.dead_mail().await? {
            let now = self.now_ms();
            let tx = self.store.begin().await?;
            if Template::from_db(&mail.template) == Some(Template::ChangeNotice) {
                tx.requeue_mail(&mail.mail_id, now).await?;
                report.requeued += 1;
            } else {
                let flow = match &mail.flow_id {
                    Some(id) => tx.flow(id).await?,
                    None => None,
                };
                match flow {
                    Some(mut f) if f.state == FlowState::Pending.as_str() => {
                        tx.lock_user(&f.user_id, false, now).await?;
                        tx.supersede_tokens(&f.flow_id).await?;
                        let step = step_of(&f.step);
                        self.send_link(&tx, &mut f, step, now).await?;
                        tx.update_flow(&f).await?;
                        tx.mark_mail_retried(&mail.mail_id).await?;
                        self.event(
                            &tx,
                            &f.user_id,
                            Some(&f.flow_id),
                            "mail_retried",
                            &mask(&mail.recipient),
                            "",
                            now,
                        )
                        .await?;
                        report.relinked += 1;
                    }
                    _ => {
                        report.left_dead += 1;
                        continue;
                    }
                }
            }
            tx.commit().await?;
        }
        self.mail_ready.notify_one();
        Ok(report)
    }

    // ----- the steps behind the use-cases -----

    /// For the link pages' buttons: the token (in any state) and its user, whose row is
    /// then locked, in a new transaction.
    async fn lock_token_owner(
        &self,
        token: &Token,
        now: i64,
    ) -> CoreResult<(Tx, UserId, token::Model)> {
        let tx = self.store.begin().await?;
        let tok = tx
            .find_token(&self.candidates(token))
            .await?
            .ok_or(CoreError::TokenNotFound)?;
        let f = tx
            .flow(&tok.flow_id)
            .await?
            .ok_or(CoreError::TokenNotFound)?;
        let user = UserId::from_trusted(f.user_id);
        tx.lock_user(user.as_str(), false, now).await?;
        Ok((tx, user, tok))
    }

    /// The token's flow, read again under the user's lock, if it is still pending.
    async fn pending_flow_of(&self, tx: &Tx, tok: &token::Model) -> CoreResult<flow::Model> {
        let f = tx
            .flow(&tok.flow_id)
            .await?
            .ok_or(CoreError::TokenNotFound)?;
        if f.state != FlowState::Pending.as_str() {
            return Err(CoreError::NoPendingFlow);
        }
        Ok(f)
    }

    /// RequestVerification's rules, inside the caller's transaction.
    async fn verify_in(
        &self,
        tx: &Tx,
        user: &UserId,
        row: &crate::store::entity::user::Model,
        email: &EmailAddress,
        locale: Locale,
        now: i64,
    ) -> CoreResult<FlowView> {
        // Order (API.md): the user's own address first, then EMAIL_TAKEN.
        if row.email_verified {
            return Err(if row.email.as_deref() == Some(email.as_str()) {
                CoreError::EmailAlreadyVerified
            } else {
                CoreError::UseChangeFlow
            });
        }
        let pending = self.pending_unless_taken(tx, user, email).await?;
        if let Some(p) = &pending
            && p.kind == FlowKind::Verify.as_str()
            && p.new_email == email.as_str()
            && p.expires_at > now
        {
            // A retry of the same request: same flow, no second email.
            return Ok(self.view(p));
        }
        if let Some(p) = pending {
            self.supersede(tx, &p, now).await?;
        }
        tx.set_user_email(user.as_str(), email.as_str(), None, now)
            .await?;
        let mut f = new_flow(user, FlowKind::Verify, email, None, locale, now);
        // The link first, so the flow row is written once, complete.
        self.send_link(tx, &mut f, FlowStep::ConfirmNew, now)
            .await?;
        tx.insert_flow(f.clone()).await?;
        crate::metrics::flow_requested("verify");
        self.event(
            tx,
            user.as_str(),
            Some(&f.flow_id),
            "verification_requested",
            &email.masked(),
            "",
            now,
        )
        .await?;
        Ok(self.view(&f))
    }

    async fn resend_in(&self, tx: &Tx, mut f: flow::Model, now: i64) -> CoreResult<FlowView> {
        if now < f.resend_available_at {
            let wait = (f.resend_available_at - now) as u64;
            // Round up so a client that waits exactly this long is accepted.
            return Err(CoreError::ResendCooldown {
                retry_after: Duration::from_secs(wait.div_ceil(1000)),
            });
        }
        tx.supersede_tokens(&f.flow_id).await?;
        let step = step_of(&f.step);
        self.send_link(tx, &mut f, step, now).await?;
        tx.update_flow(&f).await?;
        self.event(
            tx,
            &f.user_id,
            Some(&f.flow_id),
            "link_resent",
            &mask(recipient_of(&f, step)),
            "",
            now,
        )
        .await?;
        Ok(self.view(&f))
    }

    /// Applies a consumed token's step to its flow.
    async fn advance(
        &self,
        tx: &Tx,
        user: &UserId,
        current_email: &Option<String>,
        mut f: flow::Model,
        now: i64,
    ) -> CoreResult<Confirmation> {
        let kind = kind_of(&f.kind);
        let step = step_of(&f.step);
        let (next, outcome) = kind.advance(step).ok_or_else(|| {
            CoreError::Internal(anyhow::anyhow!("flow has no step after {step:?}"))
        })?;
        let new_email = EmailAddress::from_trusted(f.new_email.clone());
        self.refuse_if_taken(tx, user, &new_email).await?;
        let email = match outcome {
            Outcome::EmailVerified | Outcome::EmailChanged => {
                // May trip the verified-address index if another user won a race.
                tx.set_user_email(user.as_str(), new_email.as_str(), Some(now), now)
                    .await?;
                f.step = next.as_str().to_owned();
                f.state = FlowState::Completed.as_str().to_owned();
                f.updated_at = now;
                tx.update_flow(&f).await?;
                let event = if outcome == Outcome::EmailChanged {
                    "email_changed"
                } else {
                    "email_verified"
                };
                self.event(
                    tx,
                    user.as_str(),
                    Some(&f.flow_id),
                    event,
                    &new_email.masked(),
                    "",
                    now,
                )
                .await?;
                if outcome == Outcome::EmailChanged {
                    self.send_change_notice(tx, &f, now).await?;
                }
                new_email.as_str().to_owned()
            }
            Outcome::CurrentConfirmed => {
                let old = f.old_email.clone().unwrap_or_default();
                self.event(
                    tx,
                    user.as_str(),
                    Some(&f.flow_id),
                    "current_confirmed",
                    &mask(&old),
                    "",
                    now,
                )
                .await?;
                self.send_link(tx, &mut f, next, now).await?;
                tx.update_flow(&f).await?;
                current_email.clone().unwrap_or(old)
            }
        };
        Ok(Confirmation {
            user_id: user.as_str().to_owned(),
            flow: self.view(&f),
            outcome,
            email,
        })
    }

    /// Finds the token and its flow and checks the token is live. A refusal is recorded
    /// in the audit trail (the transaction has written nothing else yet).
    async fn live_token(
        &self,
        tx: Tx,
        token: &Token,
        now: i64,
    ) -> CoreResult<(Tx, token::Model, flow::Model)> {
        match self.live_token_readonly(&tx, token, now).await {
            Ok((tok, f)) => Ok((tx, tok, f)),
            Err((e, Some(f))) => {
                let event = if matches!(e, CoreError::TokenExpired) {
                    "expired_link_used"
                } else {
                    "link_refused"
                };
                self.event(
                    &tx,
                    &f.user_id,
                    Some(&f.flow_id),
                    event,
                    "",
                    e.reason(),
                    now,
                )
                .await?;
                tx.commit().await?;
                Err(e)
            }
            Err((e, None)) => Err(e),
        }
    }

    async fn live_token_readonly(
        &self,
        tx: &Tx,
        token: &Token,
        now: i64,
    ) -> Result<(token::Model, flow::Model), (CoreError, Option<flow::Model>)> {
        let tok = tx
            .find_token(&self.candidates(token))
            .await
            .map_err(|e| (e, None))?
            .ok_or((CoreError::TokenNotFound, None))?;
        let f = tx
            .flow(&tok.flow_id)
            .await
            .map_err(|e| (e, None))?
            .ok_or((CoreError::TokenNotFound, None))?;
        // When several states apply, the first wins: used, superseded, expired.
        let refusal = if tok.state == TOKEN_USED {
            Some(CoreError::TokenUsed)
        } else if tok.state == TOKEN_SUPERSEDED {
            Some(CoreError::TokenSuperseded)
        } else if tok.expires_at <= now {
            Some(CoreError::TokenExpired)
        } else {
            None
        };
        match refusal {
            Some(e) => Err((e, Some(f))),
            None => Ok((tok, f)),
        }
    }

    /// Issues a new token for `step`, queues its mail and sets the flow's link times.
    async fn send_link(
        &self,
        tx: &Tx,
        f: &mut flow::Model,
        step: FlowStep,
        now: i64,
    ) -> CoreResult<()> {
        let kind = kind_of(&f.kind);
        let ttl = match kind {
            FlowKind::Verify => self.policy.verify_ttl,
            FlowKind::Change => self.policy.change_ttl,
        };
        let recipient = recipient_of(f, step).to_owned();
        if let Err(retry_after) = tx
            .take(&bucket("rcpt", &recipient), self.policy.recipient_rate, now)
            .await?
        {
            crate::metrics::rate_limited("recipient");
            return Err(CoreError::RateLimited { retry_after });
        }
        let token = Token::generate();
        let code = generate_code();
        let expires_at = now + duration_ms(ttl);
        let digest = self.keys.sign(&token).0;
        tx.insert_token(NewToken {
            digest: &digest,
            flow_id: &f.flow_id,
            step: step.as_str(),
            expires_at,
            code_digest: &self.keys.code_digest(&digest, &code),
            now,
        })
        .await?;
        f.step = step.as_str().to_owned();
        f.expires_at = expires_at;
        f.resend_available_at = now + duration_ms(self.policy.resend_cooldown);
        f.updated_at = now;

        let template = match (kind, step) {
            (FlowKind::Change, FlowStep::ConfirmCurrent) => Template::ChangeCurrentLink,
            (FlowKind::Change, _) => Template::ChangeNewLink,
            (FlowKind::Verify, _) => Template::VerifyLink,
        };
        let mail_id = uuid::Uuid::now_v7().to_string();
        let secrets = Secrets {
            link: format!("{}/verify?token={}", self.policy.public_url, token.expose()),
            code,
        };
        let sealed = serde_json::to_vec(&secrets).map_err(|e| CoreError::Internal(e.into()))?;
        let params = MailParams {
            expires_at,
            ttl_secs: ttl.as_secs(),
            masked_new: mask(&f.new_email),
            masked_old: f.old_email.as_deref().map(mask).unwrap_or_default(),
            changed_at: None,
            support: String::new(),
        };
        tx.enqueue_mail(NewMail {
            sealed_link: Some(self.keys.seal(&sealed, mail_id.as_bytes())),
            mail_id,
            user_id: &f.user_id,
            flow_id: Some(&f.flow_id),
            template: template.as_str(),
            recipient: &recipient,
            locale: &f.locale,
            params: serde_json::to_string(&params).map_err(|e| CoreError::Internal(e.into()))?,
            now,
        })
        .await
    }

    /// A completed change tells the OLD address what happened (no link: nothing to click).
    async fn send_change_notice(&self, tx: &Tx, f: &flow::Model, now: i64) -> CoreResult<()> {
        let Some(old) = &f.old_email else {
            return Ok(());
        };
        let params = MailParams {
            expires_at: 0,
            ttl_secs: 0,
            masked_new: mask(&f.new_email),
            masked_old: mask(old),
            changed_at: Some(now),
            support: self.policy.support_contact.clone(),
        };
        tx.enqueue_mail(NewMail {
            mail_id: uuid::Uuid::now_v7().to_string(),
            user_id: &f.user_id,
            flow_id: Some(&f.flow_id),
            template: Template::ChangeNotice.as_str(),
            recipient: old,
            locale: &f.locale,
            params: serde_json::to_string(&params).map_err(|e| CoreError::Internal(e.into()))?,
            sealed_link: None,
            now,
        })
        .await
    }

    async fn supersede(&self, tx: &Tx, f: &flow::Model, now: i64) -> CoreResult<()> {
        self.end_flow(tx, f, FlowState::Superseded, now).await?;
        self.event(
            tx,
            &f.user_id,
            Some(&f.flow_id),
            "flow_superseded",
            "",
            "",
            now,
        )
        .await
    }

    async fn end_flow(
        &self,
        tx: &Tx,
        f: &flow::Model,
        state: FlowState,
        now: i64,
    ) -> CoreResult<()> {
        tx.supersede_tokens(&f.flow_id).await?;
        let mut ended = f.clone();
        ended.state = state.as_str().to_owned();
        ended.updated_at = now;
        tx.update_flow(&ended).await
    }

    /// EMAIL_TAKEN if another user has `email` verified; else the user's pending flow.
    async fn pending_unless_taken(
        &self,
        tx: &Tx,
        user: &UserId,
        email: &EmailAddress,
    ) -> CoreResult<Option<flow::Model>> {
        match tx.owner_and_pending(user.as_str(), email.as_str()).await? {
            (Some(owner), _) if owner != user.as_str() => Err(CoreError::EmailTaken),
            (_, pending) => Ok(pending),
        }
    }

    async fn refuse_if_taken(
        &self,
        tx: &Tx,
        user: &UserId,
        email: &EmailAddress,
    ) -> CoreResult<()> {
        match tx.verified_owner(email.as_str()).await? {
            Some(owner) if owner != user.as_str() => Err(CoreError::EmailTaken),
            _ => Ok(()),
        }
    }

    /// Commits a successful use-case (and wakes the mail worker), or rolls back a failed
    /// one and records the refusal.
    async fn finish<T>(&self, tx: Tx, user: &UserId, result: CoreResult<T>) -> CoreResult<T> {
        match result {
            Ok(v) => {
                tx.commit().await?;
                self.mail_ready.notify_one();
                Ok(v)
            }
            Err(e) => {
                drop(tx);
                self.record_refusal(user, &e, self.now_ms()).await;
                Err(e)
            }
        }
    }

    /// `finish` for RequestVerification / RequestChange / Resend: a refused request rolled
    /// back its use of the per-user limit, so it is counted again on its own (probing for
    /// taken addresses costs quota too). A refusal by that limit itself takes nothing.
    async fn finish_request<T>(
        &self,
        tx: Tx,
        user: &UserId,
        result: CoreResult<T>,
    ) -> CoreResult<T> {
        let refused = matches!(&result, Err(e) if !e.reason().is_empty());
        let result = self.finish(tx, user, result).await;
        if refused {
            let counted = self
                .store
                .take(
                    &bucket("user", user.as_str()),
                    self.policy.user_rate,
                    self.now_ms(),
                )
                .await;
            if let Err(e) = counted {
                tracing::warn!(error = %e, "could not count a refused request against its user");
            }
        }
        result
    }

    /// Refusals of known users go to the audit trail (best effort: a failure to record
    /// must not hide the refusal itself).
    async fn record_refusal(&self, user: &UserId, e: &CoreError, now: i64) {
        if e.reason().is_empty() {
            return;
        }
        let ctx = context::current();
        let event_type = match e {
            CoreError::RateLimited { .. } => "rate_limited",
            CoreError::LockedOut { .. } => "locked_out",
            _ => "request_refused",
        };
        let event = NewEvent {
            user_id: user.as_str(),
            flow_id: None,
            event_type,
            masked_address: "",
            detail: e.reason(),
            at: now,
            actor: &ctx.actor,
            request_id: &ctx.request_id,
        };
        if let Err(err) = self.store.event_if_user_exists(event).await {
            tracing::warn!(error = %err, "could not record a refusal in the audit trail");
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn event(
        &self,
        tx: &Tx,
        user_id: &str,
        flow_id: Option<&str>,
        event_type: &str,
        masked_address: &str,
        detail: &str,
        now: i64,
    ) -> CoreResult<()> {
        let ctx = context::current();
        tx.event(NewEvent {
            user_id,
            flow_id,
            event_type,
            masked_address,
            detail,
            at: now,
            actor: &ctx.actor,
            request_id: &ctx.request_id,
        })
        .await
    }

    fn view(&self, f: &flow::Model) -> FlowView {
        let step = step_of(&f.step);
        FlowView {
            flow_id: f.flow_id.clone(),
            kind: kind_of(&f.kind),
            step,
            masked_recipient: mask(recipient_of(f, step)),
            expires_at: f.expires_at,
            resend_available_at: f.resend_available_at,
        }
    }

    fn candidates(&self, token: &Token) -> Vec<String> {
        self.keys
            .candidates(token)
            .into_iter()
            .map(|d| d.0)
            .collect()
    }

    /// The core's clock (Unix ms); adapters use it too (metrics).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

fn new_flow(
    user: &UserId,
    kind: FlowKind,
    new_email: &EmailAddress,
    old_email: Option<&str>,
    locale: Locale,
    now: i64,
) -> flow::Model {
    flow::Model {
        flow_id: uuid::Uuid::now_v7().to_string(),
        user_id: user.as_str().to_owned(),
        kind: kind.as_str().to_owned(),
        step: kind.first_step().as_str().to_owned(),
        state: FlowState::Pending.as_str().to_owned(),
        new_email: new_email.as_str().to_owned(),
        old_email: old_email.map(str::to_owned),
        locale: locale.as_tag().to_owned(),
        expires_at: now,
        resend_available_at: now,
        created_at: now,
        updated_at: now,
        failed_codes: 0,
        locked_until: None,
    }
}

/// A rate-limit bucket key: the limit's name and a digest of what it limits (no address
/// or IP in clear in the table).
fn bucket(kind: &str, value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("{kind}:{hex}")
}

/// Where a step's link goes: the current address for CONFIRM_CURRENT, else the new one.
fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::EmailVerified => "email_verified",
        Outcome::CurrentConfirmed => "current_confirmed",
        Outcome::EmailChanged => "email_changed",
    }
}

fn encode_cursor(event_id: i64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("ev:{event_id}"))
}

fn decode_cursor(token: &str) -> Option<i64> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("ev:")?
        .parse()
        .ok()
}

fn recipient_of(f: &flow::Model, step: FlowStep) -> &str {
    match step {
        FlowStep::ConfirmCurrent => f.old_email.as_deref().unwrap_or(&f.new_email),
        FlowStep::ConfirmNew | FlowStep::Done => &f.new_email,
    }
}

// Rows are only ever written from the enums, so an unknown string is a corrupted row;
// reading it as the safest value keeps a bad row from taking the service down.
fn kind_of(s: &str) -> FlowKind {
    FlowKind::from_db(s).unwrap_or(FlowKind::Verify)
}

fn step_of(s: &str) -> FlowStep {
    FlowStep::from_db(s).unwrap_or(FlowStep::Done)
}
