//! `emailverify outbox retry-dead`: the operator gives every dead mail another chance.
//! A notice is queued again as it was. A link mail's link was erased when it died, so
//! while its flow is still pending the current step gets a fresh link (as a resend,
//! without the cooldown); a link mail of a flow that has ended is left dead.

use crate::domain::email::mask;
use crate::domain::{EventType, FlowId, FlowState, Template};
use crate::error::CoreResult;
use crate::store::entity::flow;

use super::Core;

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

impl Core {
    pub async fn retry_dead_mail(&self) -> CoreResult<RetryReport> {
        let mut report = RetryReport::default();
        for mail in self.store.dead_mail().await? {
            let now = self.now_ms();
            let tx = self.store.begin().await?;
            if mail.template == Template::ChangeNotice {
                tx.requeue_mail(&mail.id(), now).await?;
                report.requeued += 1;
            } else {
                let flow = match &mail.flow_id {
                    Some(id) => tx.flow(&FlowId::from_trusted(id.clone())).await?,
                    None => None,
                };
                let pending = |f: &flow::Model| f.state == FlowState::Pending;
                let Some(seen) = flow.filter(pending) else {
                    report.left_dead += 1;
                    continue;
                };
                // Read again under the user's lock: the flow may have ended while the
                // lock was waited for, and writing back what was read would revive it.
                tx.lock_user(&seen.user()).await?;
                let Some(mut f) = tx.flow(&seen.id()).await?.filter(pending) else {
                    report.left_dead += 1;
                    continue;
                };
                if !tx.mark_mail_retried(&mail.id()).await? {
                    continue; // another run of the command gave it its fresh link
                }
                self.relink(&tx, &mut f, now).await?;
                let masked = mask(&mail.recipient);
                self.flow_event(&tx, &f, EventType::MailRetried, &masked, "", now)
                    .await?;
                report.relinked += 1;
            }
            tx.commit().await?;
        }
        self.mail_ready.notify_one();
        Ok(report)
    }
}
