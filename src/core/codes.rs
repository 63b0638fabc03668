//! ConfirmCode: confirms the current step with the 6-digit code printed in its mail.
//! Wrong codes count against the flow (committed, so they survive restarts); the 5th
//! locks its codes for 15 minutes, and the code that reached the lock is dead: after the
//! lock only a new code (Resend) can confirm the step. Wrong codes also count against the
//! user across flows (`EMAILVERIFY_MAX_WRONG_CODES_PER_USER`): past it every code is
//! RATE_LIMITED, so no sequence of resends and locks buys more guesses. The link of the
//! same mail keeps working: it carries 256 bits, not 20.

use std::time::Duration;

use crate::clock::duration_ms;
use crate::domain::{EventType, TokenDigest, UserId};
use crate::error::{CoreError, CoreResult};
use crate::store::Tx;
use crate::store::entity::flow;

use super::{CODE_LOCK, Confirmation, Core, MAX_WRONG_CODES};

/// What a presented code turned out to be.
enum Presented {
    /// The code of the step's live token (its digest): the user's address of record
    /// before the confirmation, and the flow.
    Right {
        email: Option<String>,
        flow: flow::Model,
        digest: TokenDigest,
    },
    Wrong(flow::Model),
}

impl Core {
    #[tracing::instrument(skip_all, fields(user_id = %user))]
    pub async fn confirm_code(&self, user: &UserId, code: &str) -> CoreResult<Confirmation> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        let result = match self.check_code(&tx, user, code, now).await {
            Ok(Presented::Right {
                email,
                flow: mut f,
                digest,
            }) => {
                async {
                    if !tx.consume_token(&digest, now).await? {
                        return Err(CoreError::TokenUsed);
                    }
                    f.failed_codes = 0;
                    self.advance(&tx, user, email, f, now).await
                }
                .await
            }
            Ok(Presented::Wrong(f)) => return Err(self.count_wrong_code(tx, user, f, now).await),
            Err(e) => Err(e),
        };
        let confirmation = self.finish(tx, user, result).await?;
        crate::metrics::confirmed(confirmation.outcome.as_str(), "code");
        Ok(confirmation)
    }

    /// Locks the user and compares `code` with the current step's.
    async fn check_code(
        &self,
        tx: &Tx,
        user: &UserId,
        code: &str,
        now: i64,
    ) -> CoreResult<Presented> {
        // Unknown user or nothing pending: the same statements either way (same answer,
        // same time).
        let (row, f) = tx
            .lock_user_pending_flow(user)
            .await?
            .ok_or(CoreError::NoPendingFlow)?;
        if let Some(until) = f.locked_until
            && until > now
        {
            return Err(CoreError::LockedOut {
                retry_after: Duration::from_millis((until - now) as u64),
            });
        }
        if f.failed_codes >= MAX_WRONG_CODES {
            // The lock has run out, but this code reached it: it stays dead. A new code
            // (`send_link` starts its count afresh) is the way on; its cooldown is the wait.
            return Err(CoreError::LockedOut {
                retry_after: Duration::from_millis((f.resend_available_at - now).max(0) as u64),
            });
        }
        // Wrong codes per user, across flows: once spent, no code is even compared (a
        // right one included, or guessing would go on at no cost).
        let (bucket, rate) = self.wrong_code_limit(user);
        if let Err(wait) = tx.peek(&bucket, rate, now).await? {
            return Err(CoreError::rate_limited(wait, "wrong_codes"));
        }
        let tok = match tx.live_token(&f.id(), f.step).await? {
            Some(t) if t.expires_at > now => t,
            _ => return Err(CoreError::TokenExpired),
        };
        let stored = tok.code_digest.clone().unwrap_or_default();
        if self.keys.code_matches(&tok.digest, code, &stored) {
            Ok(Presented::Right {
                email: row.email,
                flow: f,
                digest: TokenDigest(tok.digest),
            })
        } else {
            Ok(Presented::Wrong(f))
        }
    }

    /// A wrong code is a state change that must stick: the count is committed, then the
    /// code is refused (and audited) as every refusal is.
    async fn count_wrong_code(
        &self,
        tx: Tx,
        user: &UserId,
        mut f: flow::Model,
        now: i64,
    ) -> CoreError {
        f.failed_codes += 1;
        f.updated_at = now;
        let (err, event_type) = if f.failed_codes >= MAX_WRONG_CODES {
            f.locked_until = Some(now + duration_ms(CODE_LOCK));
            crate::metrics::rate_limited("code");
            let err = CoreError::LockedOut {
                retry_after: CODE_LOCK,
            };
            (err, EventType::CodeLocked)
        } else {
            let attempts_left = (MAX_WRONG_CODES - f.failed_codes) as u32;
            (
                CoreError::CodeMismatch { attempts_left },
                EventType::CodeMismatch,
            )
        };
        let counted = async {
            tx.update_flow(&f).await?;
            // Under the user's lock, after `check_code`'s peek: the step fits.
            let (bucket, rate) = self.wrong_code_limit(user);
            tx.take(&bucket, rate, now).await?.ok();
            tx.commit().await
        }
        .await;
        if let Err(e) = counted {
            return e;
        }
        self.refuse_as(user, Some(&f.id()), event_type, err).await
    }
}
