use sea_orm::FromQueryResult;
use sea_orm::entity::prelude::*;

use crate::domain::mailbox::MailboxKey;
use crate::error::CoreResult;

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

// How the store reads a user's row beside another row, and the key stored beside an
// address (used by `users.rs`, `flows.rs` and `tokens.rs`).

/// Every column of `users` (aliased `u` in the query) as `"C_<column>"`, with the row's
/// version as `user_version`: the user beside another row (`from_query_result(.., "C_")`).
pub(crate) fn user_columns_beside() -> &'static str {
    use sea_orm::{IdenStatic, Iterable};
    static COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let columns: Vec<String> = Column::iter()
            .map(|c| format!("u.{0} AS \"C_{0}\"", c.as_str()))
            .collect();
        format!("{}, u.version AS user_version", columns.join(", "))
    });
    &COLUMNS
}

/// The user read beside another row by `user_columns_beside`, with its version; `None`
/// when the row had no user (a left join found none).
pub(crate) fn user_beside(row: &sea_orm::QueryResult) -> CoreResult<Option<(Model, i64)>> {
    let version: Option<i64> = row.try_get("", "user_version")?;
    version
        .map(|v| Ok((Model::from_query_result(row, "C_")?, v)))
        .transpose()
}

/// The key stored beside an address written to `users.email`, and looked up for it.
pub(crate) fn key_of(email: &str) -> String {
    MailboxKey::of(email).as_str().to_owned()
}
