//! Mailbox keys (API.md, "Addresses: one inbox, one key"): `users.email_key` holds the key
//! of the inbox `users.email` reaches (`domain::mailbox::MailboxKey`), and the unique
//! index on verified addresses moves onto it, so two spellings of one inbox
//! (`jane@x` and `Jane@x`, `jane.doe@gmail.com` and `janedoe+w@googlemail.com`) can no
//! longer be verified by two users.
//!
//! What it does, in one transaction on both databases (it commits whole or not at all):
//! 1. adds the nullable column `users.email_key`;
//! 2. fills it for every row with an address, computing the key in Rust with the very
//!    function the service uses (no SQL re-implementation of NFKC or case folding), a
//!    page of rows per statement;
//! 3. settles the verified rows that now share a key (they were allowed before: the old
//!    index compared the addresses as typed). **Rule: the earliest verification keeps
//!    the address verified** (smallest `verified_at`; a row without one counts as latest;
//!    ties by `user_id`). Every other row of that key becomes unverified: its address and
//!    key are kept (the user sees the address, unverified, and may verify another one or
//!    ask support), `verified_at` is cleared, and its audit trail gets the event
//!    `email_unverified_by_migration` (actor `migration`, detail
//!    `same_inbox_verified_earlier`, the masked address). The migration never fails for
//!    such rows, and it says nothing about the other account to the user;
//! 4. creates `users_verified_mailbox_key`: UNIQUE (email_key) WHERE email_verified.
//!
//! Expand-only: the old index on verified addresses as typed,
//! `users_verified_email_key`, stays. Whatever the new one allows it allows too (equal
//! addresses have equal keys), and it keeps protecting rows that a previous release,
//! which does not write `email_key`, writes after a rollback. A later release drops it.
//!
//! `down` drops the new index and the column; rows unverified by step 3 stay unverified.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::domain::email::mask;
use crate::domain::mailbox::MailboxKey;

/// The audit event written for each row step 3 unverifies.
const EVENT: &str = "email_unverified_by_migration";
const INDEX: &str = "users_verified_mailbox_key";
/// Rows keyed per statement.
const PAGE: u64 = 500;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("users")
                    .add_column(text_null("email_key"))
                    .to_owned(),
            )
            .await?;
        fill_keys(manager).await?;
        settle_shared_keys(manager, now_ms()).await?;
        // Partial unique indexes have the same syntax on PostgreSQL and SQLite.
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE UNIQUE INDEX {INDEX} ON users (email_key) WHERE email_verified"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table("users").to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("users")
                    .drop_column("email_key")
                    .to_owned(),
            )
            .await
    }

    /// The fill and the settling must commit with the column, or not at all (SQLite too).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Step 2: every row with an address gets its key, `PAGE` rows per UPDATE (one CASE).
async fn fill_keys(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let mut after = String::new();
    loop {
        let page = db
            .query_all(
                Query::select()
                    .columns(["user_id", "email"])
                    .from("users")
                    .and_where(Expr::col("email").is_not_null())
                    .and_where(Expr::col("user_id").gt(after.clone()))
                    .order_by("user_id", Order::Asc)
                    .limit(PAGE),
            )
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.try_get("", "user_id")?;
        let mut case = CaseStatement::new();
        let mut ids = Vec::with_capacity(page.len());
        for row in &page {
            let user_id: String = row.try_get("", "user_id")?;
            let email: String = row.try_get("", "email")?;
            let key = MailboxKey::of(&email).as_str().to_owned();
            case = case.case(Expr::col("user_id").eq(user_id.clone()), key);
            ids.push(user_id);
        }
        db.execute(
            Query::update()
                .table("users")
                .value("email_key", case.finally(Expr::col("email_key")))
                .and_where(Expr::col("user_id").is_in(ids)),
        )
        .await?;
    }
}

/// Step 3: for each key verified by more than one row, the earliest verification keeps
/// it; the others are unverified and audited.
async fn settle_shared_keys(manager: &SchemaManager<'_>, now: i64) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let shared = db
        .query_all(
            Query::select()
                .column("email_key")
                .from("users")
                .and_where(Expr::col("email_verified").eq(true))
                .and_where(Expr::col("email_key").is_not_null())
                .group_by_col("email_key")
                .and_having(Expr::col("email_key").count().gt(1)),
        )
        .await?;
    for row in shared {
        let key: String = row.try_get("", "email_key")?;
        let claims = db
            .query_all(
                Query::select()
                    .columns(["user_id", "email", "verified_at"])
                    .from("users")
                    .and_where(Expr::col("email_verified").eq(true))
                    .and_where(Expr::col("email_key").eq(key)),
            )
            .await?;
        let mut claims = claims
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<Option<i64>>("", "verified_at")?,
                    r.try_get::<String>("", "user_id")?,
                    r.try_get::<String>("", "email")?,
                ))
            })
            .collect::<Result<Vec<_>, DbErr>>()?;
        // Earliest first; a verification without a time counts as the latest.
        claims.sort_by_key(|(at, user_id, _)| (at.unwrap_or(i64::MAX), user_id.clone()));
        for (_, user_id, email) in claims.into_iter().skip(1) {
            db.execute(
                Query::update()
                    .table("users")
                    .value("email_verified", false)
                    .value("verified_at", Option::<i64>::None)
                    .value("updated_at", now)
                    .and_where(Expr::col("user_id").eq(user_id.clone())),
            )
            .await?;
            db.execute(
                Query::insert()
                    .into_table("events")
                    .columns([
                        "user_id",
                        "event_type",
                        "masked_address",
                        "detail",
                        "at",
                        "actor",
                        "request_id",
                    ])
                    .values_panic([
                        user_id.into(),
                        EVENT.into(),
                        mask(&email).into(),
                        "same_inbox_verified_earlier".into(),
                        now.into(),
                        "migration".into(),
                        "".into(),
                    ]),
            )
            .await?;
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(i64::MAX))
}
