//! CancelChange: cancels the user's pending flow of either kind; its tokens stop
//! working. Also the link pages' "This wasn't me".

use crate::clock::duration_ms;
use crate::domain::email::mask;
use crate::domain::{EmailAddress, EventType, FlowKind, FlowState, FlowStep, Token, UserId};
use crate::error::CoreResult;

use super::flows::recipient_of;
use super::{Core, Report, Reported};

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
    /// What else happens depends on whose inbox the link reached (API.md):
    /// - the CURRENT address of a change: someone else asked to take this account's
    ///   address, so further changes are frozen until the owner has had time to react;
    /// - the NEW address of a change: its owner never asked to join this account; the
    ///   account's owner did nothing wrong, so nothing is frozen;
    /// - a sign-up's address: its owner never asked for it, so the unverified address
    ///   is taken off the account.
    #[tracing::instrument(skip_all)]
    pub async fn cancel_by_token(&self, token: &Token) -> CoreResult<Report> {
        let now = self.now_ms();
        let (tx, user, tok) = self.lock_token_owner(token).await?;
        let result = async {
            let f = self.pending_flow_of(&tx, &tok).await?;
            self.end_flow(&tx, &f, FlowState::Cancelled, now).await?;
            let (what, detail) = match (f.kind, tok.step) {
                (FlowKind::Change, FlowStep::ConfirmCurrent) => {
                    let until = now + duration_ms(self.policy.change_freeze);
                    tx.freeze_changes(&user, until).await?;
                    (Reported::ChangeFrozen { until }, "this_was_not_me")
                }
                (FlowKind::Change, _) => (Reported::ChangeCancelled, "this_was_not_me_new_address"),
                (FlowKind::Verify, _) => {
                    let address = EmailAddress::from_trusted(f.new_email.clone());
                    tx.remove_unverified_email(&user, &address, now).await?;
                    (Reported::SignUpCancelled, "this_was_not_me_sign_up")
                }
            };
            let masked = mask(recipient_of(&f, tok.step));
            self.flow_event(&tx, &f, EventType::ChangeReported, &masked, detail, now)
                .await?;
            Ok(Report {
                flow: self.view(&f),
                what,
            })
        }
        .await;
        self.finish(tx, &user, result).await
    }
}
