//! Schema migrations (sea-orm-migration), portable across PostgreSQL and SQLite.
//!
//! One change per file, applied in name order. They run at start (`emailverify serve`) and
//! on their own (`emailverify migrate`). Each migration must keep the previous release
//! working (expand first, contract in a later release), so a rollback of the binary never
//! meets a schema it cannot read.
//!
//! Times are stored as BIGINT Unix milliseconds: they compare the same in SQL on both
//! databases (SQLite has no native timestamp type).

use sea_orm_migration::prelude::*;

mod m20261123_000001_create_tables;
mod m20261123_000002_abuse_resistance;
mod m20261123_000003_outbox_claim_owner;
mod m20261130_000001_mailbox_key;
mod m20261130_000002_event_repeats;
mod m20261130_000003_suppression;
mod m20261130_000004_feed_position;
mod m20261201_000001_user_version;
mod m20261201_000002_version_sequence;
mod m20261206_000001_keyed_limits;
mod m20261206_000002_report_text;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_tables::Migration),
            Box::new(m20261123_000002_abuse_resistance::Migration),
            Box::new(m20261123_000003_outbox_claim_owner::Migration),
            Box::new(m20261130_000001_mailbox_key::Migration),
            Box::new(m20261130_000002_event_repeats::Migration),
            Box::new(m20261130_000003_suppression::Migration),
            Box::new(m20261130_000004_feed_position::Migration),
            Box::new(m20261201_000001_user_version::Migration),
            Box::new(m20261201_000002_version_sequence::Migration),
            Box::new(m20261206_000001_keyed_limits::Migration),
            Box::new(m20261206_000002_report_text::Migration),
        ]
    }
}
