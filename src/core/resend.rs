//! Resend: sends the current step's link again with a new token; earlier tokens of that
//! step stop working. Also the link page's "Send me a new link".

use std::time::Duration;

use crate::domain::email::mask;
use crate::domain::{EventType, Token, UserId};
use crate::error::{CoreError, CoreResult};
use crate::store::Tx;
use crate::store::entity::flow;

use super::flows::recipient_of;
use super::{Core, FlowView};

impl Core {
    #[tracing::instrument(skip_all, fields(user_id = %user))]
    pub async fn resend(&self, user: &UserId) -> CoreResult<FlowView> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        // Nothing pending costs no quota, for a known user as for an unknown one: the
        // answer must not tell them apart.
        let f = match self.lock_pending(&tx, user).await {
            Ok(f) => f,
            Err(e) => return self.finish(tx, user, Err(e)).await,
        };
        // A suppressed inbox answers ADDRESS_UNDELIVERABLE before any limit or cooldown
        // (API.md, release 3, "Precedence"): waiting would not help.
        let result = async {
            self.check_step_deliverable(&tx, &f, now).await?;
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
        let (tx, user, tok) = self.lock_token_owner(token).await?;
        let result = async {
            let f = self.pending_flow_of(&tx, &tok).await?;
            self.check_step_deliverable(&tx, &f, now).await?;
            self.resend_in(&tx, f, now).await
        }
        .await;
        self.finish(tx, &user, result).await
    }

    /// ADDRESS_UNDELIVERABLE if the inbox of the flow's current step is suppressed.
    async fn check_step_deliverable(&self, tx: &Tx, f: &flow::Model, now: i64) -> CoreResult<()> {
        self.check_deliverable(tx, &[recipient_of(f, f.step)], now)
            .await
    }

    /// The resend itself, once the cooldown allows it (the inbox was checked first): the
    /// step's tokens are superseded and a new link goes out.
    async fn resend_in(&self, tx: &Tx, mut f: flow::Model, now: i64) -> CoreResult<FlowView> {
        if now < f.resend_available_at {
            let wait = (f.resend_available_at - now) as u64;
            // Round up so a client that waits exactly this long is accepted.
            return Err(CoreError::ResendCooldown {
                retry_after: Duration::from_secs(wait.div_ceil(1000)),
            });
        }
        self.relink(tx, &mut f, now).await?;
        let masked = mask(recipient_of(&f, f.step));
        self.flow_event(tx, &f, EventType::LinkResent, &masked, "", now)
            .await?;
        Ok(self.view(&f))
    }

    /// A fresh link for the flow's current step, replacing its earlier ones.
    pub(super) async fn relink(&self, tx: &Tx, f: &mut flow::Model, now: i64) -> CoreResult<()> {
        tx.supersede_tokens(&f.id()).await?;
        let step = f.step;
        self.send_link(tx, f, step, now).await?;
        tx.update_flow(f).await
    }
}
