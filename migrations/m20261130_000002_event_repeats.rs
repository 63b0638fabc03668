//! How many times an event's refusal was repeated. A refusal that changes nothing (e.g.
//! a Resend with nothing pending) is recorded at most once a minute per user, type and
//! reason; its repeats within that minute add to this count instead of adding rows, so a
//! caller cannot bury a user's real history under its own refusals. Expand-only: one
//! column with a default, so the previous release keeps writing events as before.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("events")
                    .add_column(integer("repeats").default(1))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("events")
                    .drop_column("repeats")
                    .to_owned(),
            )
            .await
    }
}
