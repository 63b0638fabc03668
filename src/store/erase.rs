//! Erasure (EraseUser): every row that names one user, across the tables, in the
//! use-case's transaction — what the user row, its flows and its mails say the user's
//! addresses were, and then the rows themselves. Suppressions stay (they protect an inbox,
//! not a user); the core records the one `user_erased` event after.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::Tx;
use super::entity::{event, flow, outbox, rate_limit, token, user};
use crate::error::CoreResult;

impl Tx {
    /// Every address the user's rows hold: its own, its flows' old and new ones, and its
    /// mails' recipients (as stored).
    pub async fn addresses_of(&self, user_id: &str) -> CoreResult<Vec<String>> {
        let db = self.conn().await?;
        let mut addresses: Vec<String> = user::Entity::find_by_id(user_id.to_owned())
            .one(db)
            .await?
            .and_then(|u| u.email)
            .into_iter()
            .collect();
        for f in flow::Entity::find()
            .filter(flow::Column::UserId.eq(user_id))
            .all(db)
            .await?
        {
            addresses.push(f.new_email);
            addresses.extend(f.old_email);
        }
        let recipients: Vec<String> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::Recipient)
            .filter(outbox::Column::UserId.eq(user_id))
            .into_tuple()
            .all(db)
            .await?;
        addresses.extend(recipients);
        addresses.sort();
        addresses.dedup();
        Ok(addresses)
    }

    /// Deletes the user's row, flows, tokens, mails (an unsent one is never sent), events
    /// and the rate-limit buckets named in `buckets`. Tokens first: they name flows.
    pub async fn erase_user(&self, user_id: &str, buckets: Vec<String>) -> CoreResult<()> {
        let db = self.conn().await?;
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
        if !buckets.is_empty() {
            rate_limit::Entity::delete_many()
                .filter(rate_limit::Column::Bucket.is_in(buckets))
                .exec(db)
                .await?;
        }
        user::Entity::delete_by_id(user_id.to_owned())
            .exec(db)
            .await?;
        Ok(())
    }
}
