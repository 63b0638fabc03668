//! ConfirmLink: consumes a one-time token and advances its flow — a sign-up's address is
//! verified; a change's first step mails the NEW address; its second step changes the
//! address and sends the OLD one a notice. Also the read-only look of `GET /verify`.

use crate::domain::email::mask;
use crate::domain::{
    EmailAddress, EventType, FlowState, FlowStep, Outcome, Token, TokenDigest, TokenState, UserId,
};
use crate::error::{CoreError, CoreResult};
use crate::store::entity::{flow, token};
use crate::store::{Attempt, Consuming, Tx};

use super::{Confirmation, Core, FlowView};

/// What a link's page can tell of it (`Core::link_flow`).
#[derive(Debug, Clone)]
pub struct LinkFlow {
    pub flow: FlowView,
    /// Whether the flow is still pending (only then can "new link" or "this wasn't me" work).
    pub pending: bool,
    pub state: FlowState,
    /// The step this link was for (a change's CONFIRM_CURRENT went to the old address).
    pub step: FlowStep,
    /// When this link was used, if it was.
    pub used_at: Option<i64>,
    /// When the flow last changed: for a flow no longer pending, when it ended.
    pub updated_at: i64,
    /// A change's old address (empty for a sign-up) and the new one, masked apart.
    pub masked_old: String,
    pub masked_new: String,
}

/// A token that cannot confirm: why, and its flow when it has one.
type Refused = (CoreError, Option<flow::Model>);

impl Core {
    #[tracing::instrument(skip_all)]
    pub async fn confirm_link(&self, token: &Token) -> CoreResult<Confirmation> {
        let confirmation = self
            .store
            .attempts("confirm_link", |attempt| {
                self.confirm_link_as(attempt, token)
            })
            .await?;
        crate::metrics::confirmed(confirmation.outcome.as_str(), "link");
        Ok(confirmation)
    }

    /// One try of ConfirmLink, optimistic or locked as the store chose (`Store::attempts`).
    async fn confirm_link_as(
        &self,
        attempt: Attempt<'_>,
        token: &Token,
    ) -> CoreResult<Confirmation> {
        let now = self.now_ms();
        let tx = attempt.begin().await?;
        let (tok, f) = match self.live_token(&tx, token, now).await {
            Ok(found) => found,
            Err(refused) => {
                drop(tx);
                return Err(self.refuse_token(refused).await);
            }
        };
        let user = f.user();
        // Lock order user → flow → token, as every use-case: the user's lock and the
        // token's consumption are one statement.
        let consuming = tx
            .lock_user_consuming(&user, &TokenDigest(tok.digest.clone()), now)
            .await?;
        // Locked, the token and its flow were read before the lock was waited for, and may
        // have changed meanwhile: read again under it, the refusal says what happened (a
        // link superseded meanwhile is TOKEN_SUPERSEDED, not TOKEN_USED; of a user erased
        // meanwhile, TOKEN_NOT_FOUND) and the flow written back is the newest (a wrong
        // code counted meanwhile stays counted). Optimistic, the statement's guards stand
        // for this: it commits only if neither the token nor the user changed.
        let (user_row, f) = match consuming {
            Consuming::Consumed {
                user,
                read_flow_again: false,
            } => (user, f),
            Consuming::Consumed {
                user,
                read_flow_again: true,
            } => {
                let fresh = tx.flow(&f.id()).await?.ok_or_else(|| {
                    CoreError::Internal(anyhow::anyhow!("consumed token without flow"))
                })?;
                (user, fresh)
            }
            Consuming::Refused => {
                let refused = match self.live_token(&tx, token, now).await {
                    Err(refused) => refused,
                    Ok((_, f)) => (CoreError::TokenUsed, Some(f)),
                };
                drop(tx);
                return Err(self.refuse_token(refused).await);
            }
        };
        let result = self.advance(&tx, &user, user_row.email, f, now).await;
        self.finish(tx, &user, result).await
    }

    /// What `GET /verify` shows: the flow of a live token, or the error a POST would give.
    /// Reads only: a mail scanner fetching the link changes nothing (and is not audited).
    pub async fn inspect_token(&self, token: &Token) -> CoreResult<FlowView> {
        let now = self.now_ms();
        // Reads only: one statement, no transaction around it.
        let tx = self.store.reader().await?;
        let (_, f) = self.live_token(&tx, token, now).await.map_err(|(e, _)| e)?;
        Ok(self.view(&f))
    }

    /// The flow a link belongs to, whatever the link's own state, and where it stands now:
    /// a page then speaks the flow's language, offers only the buttons that can work (a
    /// finished flow's old link can neither resend nor cancel) and says what became of
    /// the request and when. Reads only.
    pub async fn link_flow(&self, token: &Token) -> CoreResult<Option<LinkFlow>> {
        let tx = self.store.reader().await?;
        let Some((tok, f)) = tx.token_with_flow(&self.keys.candidates(token)).await? else {
            return Ok(None);
        };
        let (masked_old, masked_new) = super::delivery::masks_of(&self.keys, &f);
        Ok(Some(LinkFlow {
            flow: self.view(&f),
            pending: f.state == FlowState::Pending,
            state: f.state,
            step: tok.step,
            used_at: tok.used_at,
            updated_at: f.updated_at,
            masked_old,
            masked_new,
        }))
    }

    /// Applies a consumed token's step to its flow. `current_email`: the user's address
    /// of record before it.
    pub(super) async fn advance(
        &self,
        tx: &Tx,
        user: &UserId,
        current_email: Option<String>,
        mut f: flow::Model,
        now: i64,
    ) -> CoreResult<Confirmation> {
        let (next, outcome) = f.kind.advance(f.step).ok_or_else(|| {
            CoreError::Internal(anyhow::anyhow!("flow has no step after {:?}", f.step))
        })?;
        let new_email = EmailAddress::from_trusted(f.new_email.clone());
        let email = match outcome {
            Outcome::EmailVerified | Outcome::EmailChanged => {
                f.step = next;
                f.state = FlowState::Completed;
                f.updated_at = now;
                // The flow's last change, its event and the change notice wait, and go
                // with the address's write in one statement.
                tx.queue_flow_update(&f).await?;
                let event = match outcome {
                    Outcome::EmailChanged => EventType::EmailChanged,
                    _ => EventType::EmailVerified,
                };
                self.flow_event(tx, &f, event, &new_email.masked(), "", now)
                    .await?;
                if outcome == Outcome::EmailChanged {
                    self.send_change_notice(tx, &f, now).await?;
                }
                // EMAIL_TAKEN when another user has this inbox verified: the
                // verified-address index refuses the write (no read before it), and the
                // whole use-case rolls back.
                tx.set_verified_email(user, &new_email, now).await?;
                new_email.as_str().to_owned()
            }
            Outcome::CurrentConfirmed => {
                if let Some(owner) = tx.verified_owner(&new_email.mailbox_key()).await?
                    && owner != *user
                {
                    return Err(CoreError::EmailTaken);
                }
                let old = f.old_email.clone().unwrap_or_default();
                self.flow_event(tx, &f, EventType::CurrentConfirmed, &mask(&old), "", now)
                    .await?;
                self.send_link(tx, &mut f, next, now).await?;
                tx.queue_flow_update(&f).await?;
                current_email.unwrap_or(old)
            }
        };
        Ok(Confirmation {
            user_id: user.as_str().to_owned(),
            flow: self.view(&f),
            outcome,
            email,
        })
    }

    /// The token and its flow, if the token can confirm now. When several states apply,
    /// the first wins: used, superseded, expired.
    async fn live_token(
        &self,
        tx: &Tx,
        token: &Token,
        now: i64,
    ) -> Result<(token::Model, flow::Model), Refused> {
        let (tok, f) = tx
            .token_with_flow(&self.keys.candidates(token))
            .await
            .map_err(|e| (e, None))?
            .ok_or((CoreError::TokenNotFound, None))?;
        let refusal = match tok.state {
            TokenState::Used => Some(CoreError::TokenUsed),
            TokenState::Superseded => Some(CoreError::TokenSuperseded),
            TokenState::Live if tok.expires_at <= now => Some(CoreError::TokenExpired),
            TokenState::Live => None,
        };
        match refusal {
            Some(e) => Err((e, Some(f))),
            None => Ok((tok, f)),
        }
    }

    /// A refused token is audited for the user of its flow (an unknown token has none).
    async fn refuse_token(&self, (e, f): Refused) -> CoreError {
        match f {
            Some(f) => self.refuse(&f.user(), Some(&f.id()), e).await,
            None => e,
        }
    }
}
