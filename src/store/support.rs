//! The support console's reads: the users whose address reaches an inbox (any spelling),
//! and a user's latest mails.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::Store;
use super::entity::{outbox, user};
use crate::domain::{MailboxKey, UserId};
use crate::error::CoreResult;

impl Store {
    /// The ids of the users (at most `limit`) whose address, verified or not, has the
    /// mailbox key `key`.
    pub async fn users_with_key(&self, key: &MailboxKey, limit: u64) -> CoreResult<Vec<UserId>> {
        let ids: Vec<String> = user::Entity::find()
            .select_only()
            .column(user::Column::UserId)
            .filter(user::Column::EmailKey.eq(key.as_str()))
            .order_by_desc(user::Column::EmailVerified)
            .order_by_asc(user::Column::UserId)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(ids.into_iter().map(UserId::from_trusted).collect())
    }

    /// The user's latest mails (at most `limit`), newest first.
    pub async fn mails_of(&self, user_id: &UserId, limit: u64) -> CoreResult<Vec<outbox::Model>> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::UserId.eq(user_id.as_str()))
            .order_by_desc(outbox::Column::CreatedAt)
            .order_by_desc(outbox::Column::MailId)
            .limit(limit)
            .all(&self.db)
            .await?)
    }
}
