//! The `events` table: the audit trail, append-only, newest first by `event_id`.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};

use super::entity::event;
use super::{Store, Tx};
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

    /// Appends an audit event outside any use-case transaction (a refusal, whose
    /// transaction was rolled back). Only for users that exist, so unknown ids cannot fill
    /// the table.
    pub async fn event_if_user_exists(&self, e: NewEvent<'_>) -> CoreResult<()> {
        if self.user(e.user_id).await?.is_some() {
            event::Entity::insert(row(e))
                .exec_without_returning(&self.db)
                .await?;
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
        detail: Set(e.detail.chars().take(256).collect()),
        at: Set(e.at),
        actor: Set(e.actor.chars().take(64).collect()),
        request_id: Set(e.request_id.chars().take(64).collect()),
    }
}
