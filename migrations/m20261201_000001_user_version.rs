//! Optimistic use-cases (`store::optimistic`). Two things, expand-only:
//!
//! - `users.version`: bumped by every statement that takes a user's lock, so a use-case
//!   that read a user's state WITHOUT the lock can commit only if no locking use-case
//!   committed in between (its one statement updates the row `WHERE version = read`;
//!   `m20261201_000002` makes every version unique);
//! - on PostgreSQL, `emailverify_verdict(ok, refused)`: what that one statement ends
//!   with. It raises SQLSTATE 40001 (serialization failure: run again) when a guard did
//!   not hold, `EV429` with the name of the limit when a rate limit refused, and
//!   otherwise returns true. Raising is what makes the statement all or nothing: it runs
//!   outside a transaction block, so an error rolls back every write it made.
//!
//! The previous release neither reads nor bumps the column; it only ever locks.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const VERDICT: &str = "CREATE OR REPLACE FUNCTION emailverify_verdict(ok boolean, refused text) \
     RETURNS boolean LANGUAGE plpgsql AS $$ \
     BEGIN \
       IF NOT ok THEN \
         RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = 'emailverify: a guard did not hold'; \
       END IF; \
       IF refused IS NOT NULL THEN \
         RAISE EXCEPTION USING ERRCODE = 'EV429', MESSAGE = refused; \
       END IF; \
       RETURN true; \
     END $$";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("users")
                    .add_column(big_integer("version").default(0))
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            manager.get_connection().execute_unprepared(VERDICT).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == sea_orm::DbBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DROP FUNCTION IF EXISTS emailverify_verdict(boolean, text)")
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table("users")
                    .drop_column("version")
                    .to_owned(),
            )
            .await
    }
}
