//! Versions that never repeat (PostgreSQL, where the optimistic use-cases run). Counted
//! up from 0, a user erased and created again would pass through the versions of the
//! row before it, and an optimistic try that read that row could commit over the new
//! one. From here on every version, a new row's and each bump, is the next value of the
//! sequence `users_version_seq`, through `emailverify_next_version()` (the statements
//! call the function, so that they carry no quoted text: `store/combine.rs`). The
//! sequence starts past every version already stored, so no value ever comes back.
//! SQLite runs no optimistic use-case: its versions only count.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: [&str; 4] = [
    "CREATE SEQUENCE IF NOT EXISTS users_version_seq MINVALUE 1 OWNED BY users.version",
    "SELECT setval('users_version_seq', GREATEST(1, (SELECT COALESCE(max(version), 0) FROM users)))",
    "CREATE OR REPLACE FUNCTION emailverify_next_version() RETURNS bigint \
     LANGUAGE sql VOLATILE AS $$ SELECT nextval('users_version_seq') $$",
    "ALTER TABLE users ALTER COLUMN version SET DEFAULT emailverify_next_version()",
];

const DOWN: [&str; 3] = [
    "ALTER TABLE users ALTER COLUMN version SET DEFAULT 0",
    "DROP FUNCTION IF EXISTS emailverify_next_version()",
    "DROP SEQUENCE IF EXISTS users_version_seq",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, &UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, &DOWN).await
    }
}

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    if manager.get_database_backend() != sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}
