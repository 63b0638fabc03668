//! The `events` table: the audit trail, append-only, newest first by `event_id`.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait,
};

use super::entity::event;
use super::{Store, Tx, raw};
use crate::domain::{EventType, FlowId, UserId};
use crate::error::CoreResult;

pub struct NewEvent<'a> {
    pub user_id: UserId,
    pub flow_id: Option<FlowId>,
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
        user_id: &UserId,
        before: Option<i64>,
        limit: u64,
    ) -> CoreResult<Vec<event::Model>> {
        let mut q = event::Entity::find().filter(event::Column::UserId.eq(user_id.as_str()));
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
    /// for a user that exists, so unknown ids cannot fill the table either. The user's row
    /// is locked first (the same lock every use-case of that user takes), so racing
    /// refusals of one user queue behind each other: exactly one row a window, on both
    /// databases.
    pub async fn record_refusal(&self, e: NewEvent<'_>, since: i64) -> CoreResult<()> {
        let tx = self.begin().await?;
        if tx.lock_user(&e.user_id).await?.is_none() {
            return Ok(()); // unknown user: nothing (the drop rolls back)
        }
        let bump = raw(
            tx.backend(),
            "UPDATE events SET repeats = repeats + 1 WHERE event_id = \
               (SELECT event_id FROM events WHERE user_id = $1 AND event_type = $2 \
                  AND detail = $3 AND at >= $4 ORDER BY event_id DESC LIMIT 1)",
            [
                e.user_id.as_str().into(),
                e.event_type.as_str().into(),
                cut(e.detail, DETAIL_LEN).into(),
                since.into(),
            ],
        );
        if tx.conn().await?.execute_raw(bump).await?.rows_affected() == 0 {
            tx.conn()
                .await?
                .execute_raw(event::Entity::insert(row(e)).build(tx.backend()))
                .await?;
        }
        tx.commit().await
    }
}

impl Tx {
    /// A fresh row, so it may wait for the next statement (see `batch.rs`).
    pub async fn event(&self, e: NewEvent<'_>) -> CoreResult<()> {
        let row = row(e);
        if self.wait(|rows| rows.new_event(&row)) {
            return Ok(());
        }
        let insert = event::Entity::insert(row).build(self.backend());
        self.conn().await?.execute_raw(insert).await?;
        Ok(())
    }
}

/// The row of an event; free text is cut to the column's size.
pub(super) fn row(e: NewEvent<'_>) -> event::ActiveModel {
    event::ActiveModel {
        event_id: sea_orm::ActiveValue::NotSet,
        user_id: Set(e.user_id.into_string()),
        flow_id: Set(e.flow_id.map(FlowId::into_string)),
        event_type: Set(e.event_type.as_str().to_owned()),
        masked_address: Set(e.masked_address.to_owned()),
        detail: Set(cut(e.detail, DETAIL_LEN)),
        at: Set(e.at),
        actor: Set(cut(e.actor, TAG_LEN)),
        request_id: Set(cut(e.request_id, TAG_LEN)),
        repeats: sea_orm::ActiveValue::NotSet,
        feed_tx: sea_orm::ActiveValue::NotSet,
    }
}

/// The columns' sizes (see the migrations): free text is cut to fit.
const DETAIL_LEN: usize = 256;
const TAG_LEN: usize = 64;

fn cut(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}
