//! WatchEvents, the change feed (API.md, "The change feed"): every user's events in one
//! order all watchers share, each exactly once, resumable by an opaque cursor.
//!
//! Why it is gap-free with several replicas writing: an event's position is
//! `(transaction id, event id)`, and a page is read only below the oldest transaction
//! still running on PostgreSQL (`store::feed`). A transaction that started earlier but
//! commits later has a lower id, so it holds the horizon back until it commits; nothing
//! can appear behind a position a watcher has passed. (Tailing the event id alone would
//! skip such a row: ids are taken at insert, rows become visible at commit.) SQLite writes
//! one transaction at a time, so its ids are already in commit order.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{CoreError, CoreResult};
use crate::store::FeedPos;

use super::{Core, EventView};

/// One event of the feed, with its position and the cursor that resumes after it.
#[derive(Debug, Clone)]
pub struct FeedItem {
    pub pos: FeedPos,
    pub cursor: String,
    pub user_id: String,
    pub event: EventView,
}

impl Core {
    /// Where a watcher starts: after `after` (a cursor), at the first event ever
    /// (`from_beginning`), or after everything committed before the call. At most one read,
    /// counted as `start`.
    pub async fn feed_start(&self, after: &str, from_beginning: bool) -> CoreResult<FeedPos> {
        if !after.is_empty() {
            let pos = decode(after).ok_or(CoreError::InvalidCursor)?;
            // Events before the oldest one kept are gone: the watcher has missed some.
            crate::metrics::feed_read("start");
            if let Some(oldest) = self.store.feed_oldest().await?
                && pos < (oldest.0, oldest.1 - 1)
            {
                return Err(CoreError::CursorExpired);
            }
            return Ok(pos);
        }
        if from_beginning {
            return Ok(FEED_START);
        }
        self.feed_head("start").await
    }

    /// After every event a reader could see now (one read, counted as `kind`).
    pub async fn feed_head(&self, kind: &'static str) -> CoreResult<FeedPos> {
        crate::metrics::feed_read(kind);
        self.store.feed_head().await
    }

    /// The next events after `pos` (of `types`, all when empty), at most `limit`, none past
    /// `upto`; and the position after the last one (`pos` when none). One read of the
    /// events table, counted in `emailverify_feed_reads_total{kind}`.
    pub async fn feed_page(
        &self,
        pos: FeedPos,
        types: &[String],
        limit: u64,
        upto: Option<FeedPos>,
        kind: &'static str,
    ) -> CoreResult<(Vec<FeedItem>, FeedPos)> {
        crate::metrics::feed_read(kind);
        let rows = self.store.feed_after(pos, types, limit, upto).await?;
        let last = rows.last().map(|r| (r.feed_tx, r.event_id)).unwrap_or(pos);
        let items = rows
            .into_iter()
            .map(|r| FeedItem {
                pos: (r.feed_tx, r.event_id),
                cursor: encode((r.feed_tx, r.event_id)),
                user_id: r.user_id,
                event: EventView {
                    event_type: r.event_type,
                    at: r.at,
                    flow_id: r.flow_id.unwrap_or_default(),
                    masked_address: r.masked_address,
                    detail: r.detail,
                },
            })
            .collect();
        Ok((items, last))
    }
}

/// Before the first event ever.
pub const FEED_START: FeedPos = (i64::MIN, i64::MIN);

fn encode((tx, id): FeedPos) -> String {
    URL_SAFE_NO_PAD.encode(format!("f1:{tx}:{id}"))
}

fn decode(cursor: &str) -> Option<FeedPos> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let mut parts = raw.strip_prefix("f1:")?.split(':');
    let tx = parts.next()?.parse().ok()?;
    let id = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((tx, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        for pos in [(0, 1), (812_344, 99), (i64::MAX, i64::MAX)] {
            assert_eq!(decode(&encode(pos)), Some(pos));
        }
        for bad in ["", "x", "ZjE6MQ", "ZjE6MToyOjM", "f1:1:2", "%%%"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
