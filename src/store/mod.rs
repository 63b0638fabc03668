//! Storage: the only code that speaks sea-orm. The core asks for rows by meaning
//! ("lock this user", "consume this token if it is live"); this module turns that into
//! portable statements for PostgreSQL and SQLite, and classifies database errors into
//! `CoreError` (`error.rs`). One file per table, in the order a sign-up touches them:
//!
//! - `users.rs` — the user row: lock it, set its address, freeze changes;
//! - `flows.rs` — flows, and the one read a new request starts with (verified owner, pending flow, suppression);
//! - `tokens.rs` — one-time tokens (digests only);
//! - `limits.rs` — GCRA rate-limit buckets, one statement a step;
//! - `outbox.rs` — queued mail: enqueue in a use-case, claim/send/fail in the worker;
//! - `events.rs` — the audit trail;
//! - `feed.rs` — the change feed's reads: events after a position, gap-free;
//! - `suppressions.rs` — inboxes no mail may go to (bounced, complained);
//! - `support.rs` — the support console's reads (users of an inbox, a user's mails);
//! - `erase.rs` — EraseUser: every row that names one user, across the tables;
//! - `delivery.rs` — what became of a mail: sent (a round at a time), a flow's link mail, bounces, complaints;
//! - `retention.rs` — old rows pruned in small batches, safe with several replicas;
//! - `connect.rs` — the PostgreSQL pool: writable servers only, sized to the server's room;
//! - `attempts.rs` — how a hot use-case is tried: optimistically first, the last try locked;
//! - `tx.rs` — `Tx`, a use-case's unit of work in one of its modes, and how its writes wait;
//! - `rows.rs` — the rows that wait, as the static statements take them;
//! - `statements.rs` and `sql/` — the statements a use-case sends whole, one file each;
//! - `optimistic.rs` — a use-case without a lock: its reads, then ONE guarded statement;
//! - `handle.rs` — a transaction or a held connection, behind one trait;
//! - `buckets.rs` — one rate-limit bucket's step and read.
//!
//! Concurrency: every use-case that changes a user's state either locks that user's row
//! first (on Postgres with an update that bumps `users.version`; SQLite runs one writer
//! at a time, and the embedded pool holds a single connection), or runs optimistically
//! and writes only if that version is still the one it read (`optimistic.rs`). Locks are
//! always taken user → flow → token, so use-cases cannot deadlock each other.

mod attempts;
mod buckets;
pub mod connect;
mod delivery;
pub mod entity;
mod erase;
mod error;
mod events;
mod feed;
mod flows;
mod handle;
mod limits;
mod optimistic;
mod outbox;
mod reads;
mod retention;
mod rows;
pub mod statements;
mod support;
mod suppressions;
mod tokens;
mod tx;
mod users;

#[cfg(test)]
mod tests;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use sea_orm_migration::MigratorTrait;

use crate::error::CoreResult;
use crate::migrations::Migrator;

pub use attempts::Attempt;
pub use events::NewEvent;
pub use feed::FeedPos;
pub use outbox::{NewMail, OutboxStats, claim_sql};
pub use reads::RequestRead;
pub use reads::{Suppression, SuppressionCause};
pub use retention::{PRUNE_BATCH, Prunable};
pub use tokens::NewToken;
pub use tx::Tx;
pub use users::Consuming;

#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// PostgreSQL: whether the hot use-cases try optimistically first (`attempts.rs`).
    optimistic: bool,
}

impl Store {
    /// Connects; for SQLite a single pooled connection (one writer at a time is what
    /// SQLite does anyway, and it keeps `BEGIN` from failing with SQLITE_BUSY).
    pub async fn connect(url: &str) -> Result<Self, sea_orm::DbErr> {
        Self::connect_with_pool(url, 32).await
    }

    /// `pool`: the most PostgreSQL connections this process holds (SQLite always uses one);
    /// fewer when the server has room for fewer (`connect.rs`).
    pub async fn connect_with_pool(url: &str, pool: u32) -> Result<Self, sea_orm::DbErr> {
        Self::open(url, pool, connect::Plans::Chosen).await
    }

    async fn open(url: &str, pool: u32, plans: connect::Plans) -> Result<Self, sea_orm::DbErr> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false)
            .connect_timeout(connect::ACQUIRE_TIMEOUT)
            .acquire_timeout(connect::ACQUIRE_TIMEOUT);
        if url.starts_with("sqlite:") {
            opts.max_connections(1).min_connections(1);
        } else {
            let pool = connect::pool_size(url, std::cmp::max(pool, 2)).await;
            opts.max_connections(pool).min_connections(2);
            connect::writable_only(&mut opts, plans);
        }
        let db = Database::connect(opts).await?;
        if db.get_database_backend() == DbBackend::Sqlite {
            db.execute_unprepared("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;")
                .await?;
        }
        Ok(Self::on(db))
    }

    /// A store on `db`, optimistic as `EMAILVERIFY_OPTIMISTIC` is by default.
    fn on(db: DatabaseConnection) -> Self {
        Self {
            db,
            optimistic: true,
        }
    }

    /// `EMAILVERIFY_OPTIMISTIC`: whether the hot use-cases try optimistically first on
    /// PostgreSQL (`attempts.rs`); on unless turned off.
    pub fn with_optimistic(mut self, on: bool) -> Self {
        self.optimistic = on;
        self
    }

    /// For a task that leads (`try_lead`): on PostgreSQL a single connection of its own
    /// (`single`), on SQLite this store.
    pub async fn alone(&self, url: &str) -> Result<Self, sea_orm::DbErr> {
        if self.db.get_database_backend() == DbBackend::Sqlite {
            return Ok(self.clone());
        }
        Self::single(url).await
    }

    /// One connection that is kept for good (no idle or lifetime limit): a session lock
    /// held on it lasts as long as this process's session (`try_lead`).
    pub async fn single(url: &str) -> Result<Self, sea_orm::DbErr> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false)
            .connect_timeout(connect::ACQUIRE_TIMEOUT)
            .acquire_timeout(connect::ACQUIRE_TIMEOUT)
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
        if !url.starts_with("sqlite:") {
            connect::writable_only(&mut opts, connect::Plans::Chosen);
        }
        Ok(Self::on(Database::connect(opts).await?))
    }

    /// Whether this process leads the task `key` names: on PostgreSQL it holds (or now
    /// takes) the session advisory lock `key` on this store's single connection, which
    /// PostgreSQL releases when the process's session ends, by a crash too. SQLite is one
    /// process: always.
    pub async fn try_lead(&self, key: i64) -> CoreResult<bool> {
        if self.db.get_database_backend() != DbBackend::Postgres {
            return Ok(true);
        }
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_try_advisory_lock($1) AS led",
                [key.into()],
            ))
            .await?;
        Ok(match row {
            Some(r) => r.try_get("", "led")?,
            None => false,
        })
    }

    /// A store for a background task that must not queue behind requests for a pooled
    /// connection (the mail worker): on PostgreSQL its own pool of `pool` connections,
    /// whose sessions run its few statements on generic plans (`connect::Plans`); on
    /// SQLite this store (one connection is all SQLite has).
    pub async fn dedicated(&self, url: &str, pool: u32) -> Result<Self, sea_orm::DbErr> {
        if self.db.get_database_backend() == DbBackend::Sqlite {
            return Ok(self.clone());
        }
        Self::open(url, pool, connect::Plans::Generic).await
    }

    /// `plan_cache_mode` of this store's PostgreSQL sessions (`None` on SQLite): what
    /// `dedicated` sets, read back by the tests.
    pub async fn plan_cache_mode(&self) -> CoreResult<Option<String>> {
        if self.db.get_database_backend() != DbBackend::Postgres {
            return Ok(None);
        }
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT current_setting('plan_cache_mode') AS mode",
            ))
            .await?;
        Ok(row.map(|r| r.try_get::<String>("", "mode")).transpose()?)
    }

    pub async fn migrate(&self) -> Result<(), sea_orm::DbErr> {
        Migrator::up(&self.db, None).await
    }

    /// Every migration this binary knows, and whether the database has it (reads only).
    pub async fn migration_status(&self) -> Result<Vec<(String, bool)>, sea_orm::DbErr> {
        use sea_orm_migration::MigrationStatus;
        Ok(Migrator::get_migration_with_status_read_only(&self.db)
            .await?
            .iter()
            .map(|m| (m.name().to_owned(), m.status() == MigrationStatus::Applied))
            .collect())
    }

    /// Whether the database answers and, on PostgreSQL, takes writes (a standby or a
    /// read-only primary is not ready), within a couple of seconds.
    pub async fn ping(&self) -> bool {
        connect::ready(&self.db).await
    }

    /// Whether this store is PostgreSQL (where use-cases may run optimistically).
    fn is_postgres(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
    }

    /// Starts a use-case's transaction (see `Tx`). The hot use-cases start theirs from
    /// `attempts` instead.
    pub async fn begin(&self) -> CoreResult<Tx> {
        Tx::begin(&self.db).await
    }

    /// For a use-case that only reads (a link page's look): on PostgreSQL its reads run on
    /// one held connection, with no transaction around them; on SQLite in a transaction.
    /// Dropped, never committed.
    pub async fn reader(&self) -> CoreResult<Tx> {
        Tx::optimistic(&self.db).await
    }

    /// An optimistic `Tx` whatever the setting (a transaction on SQLite): what an
    /// optimistic try of `attempts` begins, for the store-level tests of its guards.
    pub async fn begin_optimistic(&self) -> CoreResult<Tx> {
        Tx::optimistic(&self.db).await
    }
}

/// A hand-written statement. Ours are written with `$n`; SQLite spells them `?n`.
fn raw<I: IntoIterator<Item = sea_orm::Value>>(
    backend: DbBackend,
    sql: &str,
    values: I,
) -> Statement {
    let sql = match backend {
        DbBackend::Sqlite => sql.replace('$', "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}
