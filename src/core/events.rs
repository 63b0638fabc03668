//! ListEvents (the audit trail, newest first, paged by an opaque cursor), and how
//! use-cases append to the trail inside their transaction.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::{EventType, UserId};
use crate::error::{CoreError, CoreResult};
use crate::store::entity::flow;
use crate::store::{NewEvent, Tx};

use super::{Core, EventView, MAX_PAGE, context};

/// The page size when the caller asks for none.
const DEFAULT_PAGE: u64 = 50;

impl Core {
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
        if self.store.user(user).await?.is_none() {
            return Err(CoreError::UserNotFound);
        }
        let size = if page_size <= 0 {
            DEFAULT_PAGE
        } else {
            (page_size as u64).min(MAX_PAGE)
        };
        // One more than asked tells whether there is a next page.
        let mut rows = self.store.events(user, before, size + 1).await?;
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
                detail: if r.repeats > 1 {
                    format!("{} ×{}", r.detail, r.repeats)
                } else {
                    r.detail
                },
            })
            .collect();
        Ok((events, next))
    }

    /// Appends an event about flow `f` to the use-case's transaction, stamped with the
    /// request's actor and id.
    pub(super) async fn flow_event(
        &self,
        tx: &Tx,
        f: &flow::Model,
        event_type: EventType,
        masked_address: &str,
        detail: &str,
        now: i64,
    ) -> CoreResult<()> {
        let ctx = context::current();
        let detail = context::noted(detail);
        tx.event(NewEvent {
            user_id: f.user(),
            flow_id: Some(f.id()),
            event_type,
            masked_address,
            detail: &detail,
            at: now,
            actor: &ctx.actor,
            request_id: &ctx.request_id,
        })
        .await
    }
}

fn encode_cursor(event_id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("ev:{event_id}"))
}

fn decode_cursor(token: &str) -> Option<i64> {
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("ev:")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_anything_else_is_refused() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        for bad in ["", "!!", "ZXY6eA", "eHg6MQ"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }
}
