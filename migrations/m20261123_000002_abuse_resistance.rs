//! Abuse resistance: one-time codes, code lockout, the change freeze, who did what in the
//! audit trail, and rate-limit buckets shared by every replica.
//!
//! Expand-only: new nullable/defaulted columns and a new table, so the previous release
//! keeps working against this schema.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        let add = |table: &'static str, col: ColumnDef| {
            Table::alter().table(table).add_column(col).to_owned()
        };
        for stmt in [
            // HMAC of the 6-digit code sent with this token's link.
            add("tokens", string_len_null("code_digest", 64)),
            // Wrong codes against the flow, and the lock they cause.
            add("flows", integer("failed_codes").default(0).to_owned()),
            add("flows", big_integer_null("locked_until")),
            // After a "this wasn't me" report, RequestChange waits until this time.
            add("users", big_integer_null("change_frozen_until")),
            // Who caused the event (API caller, link page) and the request it came in.
            add("events", string_len("actor", 64).default("").to_owned()),
            add(
                "events",
                string_len("request_id", 64).default("").to_owned(),
            ),
        ] {
            manager.alter_table(stmt).await?;
        }

        // GCRA buckets: one "theoretical arrival time" per key, in Unix ms. Keys name the
        // limit and a digest of what is limited (user, recipient, client IP).
        manager
            .create_table(
                Table::create()
                    .table("rate_limits")
                    .col(string_len("bucket", 96).primary_key())
                    .col(big_integer("tat"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("rate_limits").to_owned())
            .await?;
        let drop = |table: &'static str, col: &'static str| {
            Table::alter().table(table).drop_column(col).to_owned()
        };
        for stmt in [
            drop("events", "request_id"),
            drop("events", "actor"),
            drop("users", "change_frozen_until"),
            drop("flows", "locked_until"),
            drop("flows", "failed_codes"),
            drop("tokens", "code_digest"),
        ] {
            manager.alter_table(stmt).await?;
        }
        Ok(())
    }
}
