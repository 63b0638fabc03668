//! EraseUser (API.md, "Erasure and retention", as release 3 refines it): the user's
//! address, flows, tokens and mails (an unsent one is never sent) go, in one transaction
//! under the user's row lock; the user's events are replaced by one `user_erased` event.
//! Suppressions stay: they protect the inbox. Rate-limit buckets stay too: they are keyed
//! by keyed digests and hold no personal data (`limits`), and keeping them is what stops
//! a sign-up → erase loop from restoring quota. An unknown or already erased user answers
//! OK, with nothing written (no enumeration).

use crate::domain::{EventType, UserId};
use crate::error::CoreResult;
use crate::store::NewEvent;

use super::Core;
use super::context;

impl Core {
    #[tracing::instrument(skip_all)]
    pub async fn erase_user(&self, user: &UserId) -> CoreResult<()> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        if tx.lock_user(user).await?.is_none() {
            return Ok(()); // unknown, or erased before: nothing to do (the drop rolls back)
        }
        tx.erase_user(user).await?;
        let ctx = context::current();
        // Only the support console's note (who erased, and why); never an address.
        let detail = context::noted("");
        tx.event(NewEvent {
            user_id: user.clone(),
            flow_id: None,
            event_type: EventType::UserErased,
            masked_address: "",
            detail: &detail,
            at: now,
            actor: &ctx.actor,
            request_id: &ctx.request_id,
        })
        .await?;
        tx.commit().await?;
        tracing::info!("user erased");
        Ok(())
    }
}
