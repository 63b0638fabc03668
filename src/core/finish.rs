//! How every use-case ends (see the module doc of `core`): `finish` commits a success or
//! rolls back a refusal, and `refuse` is the one place a refusal is audited.

use std::time::Duration;

use crate::clock::duration_ms;
use crate::domain::{EventType, FlowId, UserId};
use crate::error::{CoreError, CoreResult};
use crate::store::{NewEvent, Tx};

use super::{Core, context};

/// The same refusal of the same user is recorded at most once in this window.
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

impl Core {
    /// Commits a successful use-case (and wakes the mail worker), or rolls back a refused
    /// one and records the refusal.
    pub(super) async fn finish<T>(
        &self,
        tx: Tx,
        user: &UserId,
        result: CoreResult<T>,
    ) -> CoreResult<T> {
        match result {
            Ok(v) => match tx.commit().await {
                Ok(()) => {
                    self.mail_ready.notify_one();
                    Ok(v)
                }
                // A limit taken with the writes (`Tx::take_with_writes`) answers with the
                // commit: a refusal there is a refusal like any other.
                Err(e) if !e.reason().is_empty() => Err(self.refuse(user, None, e).await),
                Err(e) => Err(e),
            },
            Err(e) => {
                drop(tx);
                Err(self.refuse(user, None, e).await)
            }
        }
    }

    /// `finish` for the requests that cost quota (RequestVerification, RequestChange,
    /// Resend): a refused request wrote nothing, its use of the per-user limit included
    /// (rolled back, or, optimistic, never sent), so it is counted again on its own —
    /// probing for taken addresses costs quota too. A user the count finds over the limit
    /// is answered RATE_LIMITED whatever the rules said, as when the limit's step came
    /// first — but for a suppressed inbox, which says so before any limit (release 3,
    /// "Precedence": waiting would not help).
    pub(super) async fn finish_request<T>(
        &self,
        tx: Tx,
        user: &UserId,
        result: CoreResult<T>,
    ) -> CoreResult<T> {
        match result {
            Err(refused) if !refused.reason().is_empty() => {
                drop(tx);
                let refused = match self.count_refused_request(user).await {
                    Some(wait) if !refused.outranks_limits() => {
                        CoreError::rate_limited(wait, "user")
                    }
                    _ => refused,
                };
                Err(self.refuse(user, None, refused).await)
            }
            result => {
                let result = self.finish(tx, user, result).await;
                // Refused at commit (a limit taken with the writes): counted too.
                if matches!(&result, Err(e) if !e.reason().is_empty()) {
                    self.count_refused_request(user).await;
                }
                result
            }
        }
    }

    /// Records a refusal of `user` (type after its reason) and hands it back.
    pub(super) async fn refuse(
        &self,
        user: &UserId,
        flow_id: Option<&FlowId>,
        e: CoreError,
    ) -> CoreError {
        let event_type = refusal_event(&e);
        self.refuse_as(user, flow_id, event_type, e).await
    }

    /// Records a refusal as `event_type`, for a known user only, and hands it back. The
    /// record is written after the answer, off its path (best effort: a failure to record
    /// must not hide the refusal itself), so a known and an unknown user get the same
    /// refusal in the same time. The same refusal of the same user is recorded at most
    /// once a minute, with a count (`repeats`): a caller cannot flood the trail. Generic
    /// failures (no reason: database down, internal) are not refusals and not recorded.
    pub(super) async fn refuse_as(
        &self,
        user: &UserId,
        flow_id: Option<&FlowId>,
        event_type: EventType,
        e: CoreError,
    ) -> CoreError {
        if e.reason().is_empty() {
            return e;
        }
        let ctx = context::current();
        let store = self.store.clone();
        let (user, flow_id, detail) = (user.clone(), flow_id.cloned(), e.reason());
        let now = self.now_ms();
        tokio::spawn(async move {
            let event = NewEvent {
                user_id: user,
                flow_id,
                event_type,
                masked_address: "",
                detail,
                at: now,
                actor: &ctx.actor,
                request_id: &ctx.request_id,
            };
            let since = now - duration_ms(REFUSAL_WINDOW);
            if let Err(err) = store.record_refusal(event, since).await {
                tracing::warn!(error = %err, "could not record a refusal in the audit trail");
            }
        });
        e
    }
}

/// The audit event of a refusal, by its reason.
fn refusal_event(e: &CoreError) -> EventType {
    match e {
        CoreError::TokenExpired => EventType::ExpiredLinkUsed,
        CoreError::TokenUsed | CoreError::TokenSuperseded | CoreError::TokenNotFound => {
            EventType::LinkRefused
        }
        CoreError::CodeMismatch { .. } => EventType::CodeMismatch,
        CoreError::RateLimited { .. } => EventType::RateLimited,
        CoreError::LockedOut { .. } => EventType::LockedOut,
        _ => EventType::RequestRefused,
    }
}
