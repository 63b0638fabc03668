//! CancelChange: cancels the user's pending flow of either kind; its tokens stop
//! working. Also the link pages' "This wasn't me".

use crate::clock::duration_ms;
use crate::domain::email::mask;
use crate::domain::{EventType, FlowKind, FlowState, Token, UserId};
use crate::error::CoreResult;

use super::flows::recipient_of;
use super::{Core, FlowView};

impl Core {
    #[tracing::instrument(skip_all, fields(user_id = %user))]
    pub async fn cancel(&self, user: &UserId) -> CoreResult<()> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        let result = async {
            let f = self.lock_pending(&tx, user).await?;
            self.end_flow(&tx, &f, FlowState::Cancelled, now).await?;
            self.flow_event(&tx, &f, EventType::FlowCancelled, "", "by_caller", now)
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
        let (tx, user, tok) = self.lock_token_owner(token).await?;
        let result = async {
            let f = self.pending_flow_of(&tx, &tok).await?;
            self.end_flow(&tx, &f, FlowState::Cancelled, now).await?;
            if f.kind == FlowKind::Change {
                // Someone else asked to take this account's address: hold further changes
                // until the owner has had time to react.
                let until = now + duration_ms(self.policy.change_freeze);
                tx.freeze_changes(user.as_str(), until).await?;
            }
            let masked = mask(recipient_of(&f, tok.step));
            self.flow_event(
                &tx,
                &f,
                EventType::ChangeReported,
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
}
