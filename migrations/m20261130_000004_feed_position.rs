//! The change feed's position (WatchEvents). An event's place in the feed is the
//! transaction that wrote it, then its id: on PostgreSQL `feed_tx` defaults to the writing
//! transaction's id (`pg_current_xact_id()`), and a reader reads only below the oldest
//! transaction still running (`pg_snapshot_xmin`), so a transaction that commits late
//! cannot slip in behind a position a watcher has passed. SQLite writes one transaction at
//! a time, so there the id alone orders the feed (`feed_tx` stays 0). Expand-only: a
//! column with a default (earlier rows: 0) and an index.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            sea_orm::DbBackend::Postgres => {
                db.execute_unprepared(
                    "ALTER TABLE events ADD COLUMN feed_tx BIGINT NOT NULL DEFAULT 0; \
                     ALTER TABLE events ALTER COLUMN feed_tx SET DEFAULT (pg_current_xact_id()::text::bigint); \
                     CREATE INDEX events_feed ON events (feed_tx, event_id);",
                )
                .await?;
            }
            _ => {
                db.execute_unprepared(
                    "ALTER TABLE events ADD COLUMN feed_tx BIGINT NOT NULL DEFAULT 0",
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            db.execute_unprepared("DROP INDEX IF EXISTS events_feed")
                .await?;
        }
        db.execute_unprepared("ALTER TABLE events DROP COLUMN feed_tx")
            .await?;
        Ok(())
    }
}
