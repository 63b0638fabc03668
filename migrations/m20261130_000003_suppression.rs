//! Suppression and bounces (API.md, "Delivery status, bounces, complaints, suppression").
//!
//! - `suppressions`: one row per suppressed inbox, keyed by its mailbox key (the same key
//!   as `users.email_key`, so every spelling of one inbox is suppressed together). `cause`
//!   is `bounced` or `complained`; `until` (Unix ms) ends a bounce's suppression and is
//!   NULL for a complaint (suppressed until lifted). `detail` is the status that caused it
//!   (e.g. `5.1.1`), never an address. No user id: a suppression protects the mailbox, not
//!   an account, and outlives the account's erasure.
//! - `outbox.bounce`: set when a delivery status notification said a mail that the relay
//!   had accepted failed after all (its status and text); NULL otherwise.
//!
//! Expand-only: a new table and a nullable column, so the previous release keeps working.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("suppressions")
                    .col(text("email_key").primary_key())
                    .col(string_len("cause", 16))
                    .col(big_integer_null("until"))
                    .col(string_len("detail", 128).default(""))
                    .col(big_integer("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("outbox")
                    .add_column(string_len_null("bounce", 256))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("outbox")
                    .drop_column("bounce")
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table("suppressions").to_owned())
            .await
    }
}
