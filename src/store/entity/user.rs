use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    pub email: Option<String>,
    /// The inbox `email` reaches (`domain::mailbox::MailboxKey`), set whenever `email` is.
    /// The unique index on verified addresses is on this column.
    pub email_key: Option<String>,
    pub email_verified: bool,
    pub verified_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// RequestChange is refused until then (after a "this wasn't me" report).
    pub change_frozen_until: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
