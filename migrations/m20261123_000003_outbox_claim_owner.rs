//! Who holds an outbox claim. A worker renews its claim right before each send and only
//! while the claim is still its own, so a slow batch can never be sent twice by two
//! workers whose leases overlapped. Expand-only: one nullable column.

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
                    .table("outbox")
                    .add_column(string_len_null("claimed_by", 36))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("outbox")
                    .drop_column("claimed_by")
                    .to_owned(),
            )
            .await
    }
}
