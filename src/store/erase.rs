//! Erasure (EraseUser): every row that names one user, across the tables, in the
//! use-case's transaction. Suppressions stay (they protect an inbox, not a user), and so do
//! rate-limit buckets (keyed digests, no personal data); the core records the one
//! `user_erased` event after.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::Tx;
use super::entity::{event, flow, outbox, token, user};
use crate::domain::UserId;
use crate::error::CoreResult;

impl Tx {
    /// Deletes the user's row, flows, tokens, mails (an unsent one is never sent) and
    /// events. Tokens first: they name flows. Rate-limit buckets stay (no personal data).
    pub async fn erase_user(&self, user_id: &UserId) -> CoreResult<()> {
        let db = self.conn().await?;
        let user_id = user_id.as_str();
        let flows: Vec<String> = flow::Entity::find()
            .select_only()
            .column(flow::Column::FlowId)
            .filter(flow::Column::UserId.eq(user_id))
            .into_tuple()
            .all(db)
            .await?;
        if !flows.is_empty() {
            token::Entity::delete_many()
                .filter(token::Column::FlowId.is_in(flows))
                .exec(db)
                .await?;
        }
        outbox::Entity::delete_many()
            .filter(outbox::Column::UserId.eq(user_id))
            .exec(db)
            .await?;
        flow::Entity::delete_many()
            .filter(flow::Column::UserId.eq(user_id))
            .exec(db)
            .await?;
        event::Entity::delete_many()
            .filter(event::Column::UserId.eq(user_id))
            .exec(db)
            .await?;
        user::Entity::delete_by_id(user_id.to_owned())
            .exec(db)
            .await?;
        Ok(())
    }
}
