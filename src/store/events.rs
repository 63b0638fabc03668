//! The `events` table: the audit trail, append-only, newest first by `event_id`.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait,
};

use super::entity::event;
use super::{Store, Tx, raw};
use crate::domain::EventType;
use crate::error::CoreResult;

pub struct NewEvent<'a> {
    pub user_id: &'a str,
    pub flow_id: Option<&'a str>,
    pub event_type: EventType,
    pub masked_address: &'a str,
    pub detail: &'a str,
    pub at: i64,
    pub actor: &'a str,
    pub request_id: &'a str,
}

impl Store {
    /// The user's events, newest first, strictly older than `before` when given.
    pub async fn events(
        &self,
        user_id: &str,
        before: Option<i64>,
        limit: u64,
    ) -> CoreResult<Vec<event::Model>> {
        let mut q = event::Entity::find().filter(event::Column::UserId.eq(user_id));
        if let Some(before) = before {
            q = q.filter(event::Column::EventId.lt(before));
        }
        Ok(q.order_by_desc(event::Column::EventId)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Records a refusal outside any use-case transaction (its transaction was rolled
    /// back), at most once per window: if the same user had the same refusal (type and
    /// detail) at or after `since`, that row's `repeats` grows instead. Else a new row, only
    /// for a user that exists, so unknown ids cannot fill the table either. Each step is one
    /// statement: on SQLite (one writer) exactly one row a window; on PostgreSQL at most one
    /// per refusal racing the very first.
    pub async fn record_refusal(&self, e: NewEvent<'_>, since: i64) -> CoreResult<()> {
        let backend = self.db.get_database_backend();
        let bump = || {
            raw(
                backend,
                "UPDATE events SET repeats = repeats + 1 WHERE event_id = \
                   (SELECT event_id FROM events WHERE user_id = $1 AND event_type = $2 \
                      AND detail = $3 AND at >= $4 ORDER BY event_id DESC LIMIT 1)",
                [
                    e.user_id.into(),
                    e.event_type.as_str().into(),
                    e.detail.into(),
                    since.into(),
                ],
            )
        };
        if self.db.execute_raw(bump()).await?.rows_affected() == 1 {
            return Ok(());
        }
        let insert = raw(
            backend,
            "INSERT INTO events \
               (user_id, flow_id, event_type, masked_address, detail, at, actor, request_id, repeats) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, 1 \
             WHERE EXISTS (SELECT 1 FROM users WHERE user_id = $1) \
               AND NOT EXISTS (SELECT 1 FROM events WHERE user_id = $1 AND event_type = $3 \
                                 AND detail = $5 AND at >= $9)",
            [
                e.user_id.into(),
                e.flow_id.map(str::to_owned).into(),
                e.event_type.as_str().into(),
                e.masked_address.into(),
                cut(e.detail, DETAIL_LEN).into(),
                e.at.into(),
                cut(e.actor, TAG_LEN).into(),
                cut(e.request_id, TAG_LEN).into(),
                since.into(),
            ],
        );
        if self.db.execute_raw(insert).await?.rows_affected() == 0 {
            // Someone else's row came in meanwhile (or the user is unknown: then nothing).
            self.db.execute_raw(bump()).await?;
        }
        Ok(())
    }
}

impl Tx {
    /// A fresh row, so it may wait for the next statement (see `batch.rs`).
    pub async fn event(&self, e: NewEvent<'_>) -> CoreResult<()> {
        self.queue(event::Entity::insert(row(e)).build(self.backend()))
            .await
    }
}

/// The row of an event; free text is cut to the column's size.
pub(super) fn row(e: NewEvent<'_>) -> event::ActiveModel {
    event::ActiveModel {
        event_id: sea_orm::ActiveValue::NotSet,
        user_id: Set(e.user_id.to_owned()),
        flow_id: Set(e.flow_id.map(str::to_owned)),
        event_type: Set(e.event_type.as_str().to_owned()),
        masked_address: Set(e.masked_address.to_owned()),
        detail: Set(cut(e.detail, DETAIL_LEN)),
        at: Set(e.at),
        actor: Set(cut(e.actor, TAG_LEN)),
        request_id: Set(cut(e.request_id, TAG_LEN)),
        repeats: sea_orm::ActiveValue::NotSet,
    }
}

/// The columns' sizes (see the migrations): free text is cut to fit.
const DETAIL_LEN: usize = 256;
const TAG_LEN: usize = 64;

fn cut(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}
