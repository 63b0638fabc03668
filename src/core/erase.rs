//! EraseUser (API.md, "Erasure and retention"): the user's address, flows, tokens, mails
//! (an unsent one is never sent) and the rate-limit state keyed by the user or its
//! addresses go, in one transaction under the user's row lock; the user's events are
//! replaced by one `user_erased` event. Suppressions stay: they protect the inbox. An
//! unknown or already erased user answers OK, with nothing written (no enumeration).

use crate::domain::mailbox::MailboxKey;
use crate::domain::{EventType, UserId};
use crate::error::CoreResult;
use crate::store::NewEvent;

use super::context;
use super::{Core, limits};

impl Core {
    #[tracing::instrument(skip_all)]
    pub async fn erase_user(&self, user: &UserId) -> CoreResult<()> {
        let now = self.now_ms();
        let tx = self.store.begin().await?;
        if tx.lock_user(user.as_str()).await?.is_none() {
            return Ok(()); // unknown, or erased before: nothing to do (the drop rolls back)
        }
        let addresses = tx.addresses_of(user.as_str()).await?;
        let mut buckets = vec![limits::user_bucket(user.as_str())];
        buckets.extend(
            addresses
                .iter()
                .map(|a| limits::recipient_bucket(MailboxKey::of(a).as_str())),
        );
        tx.erase_user(user.as_str(), buckets).await?;
        let ctx = context::current();
        tx.event(NewEvent {
            user_id: user.as_str(),
            flow_id: None,
            event_type: EventType::UserErased,
            masked_address: "",
            detail: "",
            at: now,
            actor: &ctx.actor,
            request_id: &ctx.request_id,
        })
        .await?;
        tx.commit().await?;
        tracing::info!(addresses = addresses.len(), "user erased");
        Ok(())
    }
}
