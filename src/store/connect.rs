//! How a PostgreSQL pool is opened and what it keeps: only connections to a server that
//! takes writes, and no more connections than the server has room for.
//!
//! - **Writable only.** A new connection is asked `SHOW transaction_read_only` before the
//!   pool takes it (libpq's `target_session_attrs=read-write` asks the same). A pooled one
//!   is asked again when it is handed out after [`ASK_AFTER_IDLE`] unused, or at every
//!   hand-out for [`ASK_AFTER_TROUBLE`] after a statement met the server's trouble rather
//!   than its own (`error.rs`: a lost connection, a server shutting down or starting, a
//!   write refused as read-only — 25006, a primary fenced with
//!   `default_transaction_read_only` while sessions were open). A connection used moments
//!   ago in calm times is not asked: sqlx pinged it when it came back to the pool, so it is
//!   alive, and a server does not turn read-only under a session without a refused write
//!   saying so. (Asking at every hand-out cost PostgreSQL a transaction per request's statement,
//!   BENCHMARKS.md.) A hot standby, a fenced primary, or a server that went away fails the
//!   question: the connection is dropped and the pool opens another, until the acquire
//!   timeout. So behind a proxy or virtual address that moves to the new primary after a
//!   failover, the pool heals by itself, and a request in the meantime answers
//!   UNAVAILABLE (docs/database.md).
//! - **Room.** Before the pool is built the server is asked how many more connections it
//!   accepts from this role (`max_connections`, less the slots reserved for superusers
//!   unless this role is one, less the client connections open now); the pool is never
//!   larger than that, less [`OTHER_CONNECTIONS`]. A request then waits for a pooled
//!   connection (back-pressure, up to the acquire timeout) instead of asking the server
//!   for one it refuses with SQLSTATE 53300.

use std::time::{Duration, Instant};

use sea_orm::sqlx::{self, Row};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, Statement};

/// The connections a process opens beside its request pool: the mail worker's own pool
/// (`mail::outbox::ROUNDS_IN_FLIGHT`, 3) and the feed publisher's leader connection (1).
pub const OTHER_CONNECTIONS: u32 = 4;

/// Waiting for a pooled connection (or a new one) at most this long; then UNAVAILABLE.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a readiness check may take before it counts as "not ready".
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

const READ_ONLY: &str = "SHOW transaction_read_only";

/// A pooled connection unused this long is asked again whether its server takes writes.
pub const ASK_AFTER_IDLE: Duration = Duration::from_secs(1);
/// After a statement met the server's trouble (`error.rs`), every pooled connection of
/// this process is asked at every hand-out for this long.
pub const ASK_AFTER_TROUBLE: Duration = Duration::from_secs(10);

/// When a statement of this process last met the server's trouble.
static TROUBLE: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

/// A statement met the server's trouble (`error.rs`): the pools ask their connections
/// again, at every hand-out, for [`ASK_AFTER_TROUBLE`].
pub(super) fn in_doubt() {
    if let Ok(mut at) = TROUBLE.lock() {
        *at = Some(Instant::now());
    }
}

/// Whether a pooled connection unused for `idle` is asked before it is handed out.
fn ask_again(idle: Duration) -> bool {
    idle >= ASK_AFTER_IDLE
        || TROUBLE
            .lock()
            .map(|at| at.is_some_and(|at| at.elapsed() < ASK_AFTER_TROUBLE))
            .unwrap_or(true)
}

/// Whether the server at the other end of `conn` takes writes.
async fn takes_writes(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(READ_ONLY).fetch_one(conn).await?;
    Ok(row.try_get::<String, _>(0)? == "off")
}

/// How a pool's sessions plan their prepared statements.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Plans {
    /// PostgreSQL's own choice (`plan_cache_mode = auto`): five custom plans, then the
    /// generic one unless the custom plans looked cheaper.
    Chosen,
    /// The generic plan from the first execution (`force_generic_plan`): for the mail
    /// worker's few statements, whose choice flipped to a new custom plan at nearly every
    /// execution in some runs (their `now` and the outbox's statistics made custom plans
    /// look cheaper), costing PostgreSQL more to plan them than to run them
    /// (docs/benchmarks-history.md, "The worker's plans").
    Generic,
}

/// Installs the writable-only checks on a PostgreSQL pool's options, and `plans`.
pub fn writable_only(opts: &mut ConnectOptions, plans: Plans) {
    opts.map_sqlx_postgres_pool_opts(move |pool| {
        pool.test_before_acquire(false)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if plans == Plans::Generic {
                        sqlx::query("SET plan_cache_mode = force_generic_plan")
                            .execute(&mut *conn)
                            .await?;
                    }
                    if takes_writes(conn).await? {
                        Ok(())
                    } else {
                        Err(sqlx::Error::Configuration(
                            "the server is read-only (a standby, or a primary set read-only); \
                             waiting for one that takes writes"
                                .into(),
                        ))
                    }
                })
            })
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if ask_again(meta.idle_for) {
                        takes_writes(conn).await
                    } else {
                        Ok(true)
                    }
                })
            })
    });
}

/// How many connections a pool on `url` may hold: `wanted`, or less when the server has
/// room for fewer (see the module's docs); `wanted` when the server cannot tell.
pub async fn pool_size(url: &str, wanted: u32) -> u32 {
    match room(url).await {
        Ok(room) => {
            let fits = room.saturating_sub(OTHER_CONNECTIONS).max(2);
            if fits < wanted {
                tracing::warn!(
                    wanted,
                    pool = fits,
                    room,
                    "EMAILVERIFY_DB_POOL is more than the database server has room for (max_connections): the pool is smaller, and requests wait for a pooled connection"
                );
                return fits;
            }
            wanted
        }
        Err(e) => {
            tracing::debug!(error = %e, "could not read the server's connection limit");
            wanted
        }
    }
}

/// The connections the server would still accept from this role, counting the one this
/// asks on (it closes).
async fn room(url: &str) -> Result<u32, sea_orm::DbErr> {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.sqlx_logging(false)
        .connect_timeout(ACQUIRE_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .max_connections(1)
        .min_connections(0);
    let db = Database::connect(opts).await?;
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT (current_setting('max_connections')::int \
               - CASE WHEN r.rolsuper THEN 0 ELSE \
                   current_setting('superuser_reserved_connections')::int \
                   + COALESCE(current_setting('reserved_connections', true)::int, 0) END \
               - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int \
               + 1) AS room \
             FROM pg_roles r WHERE r.rolname = current_user",
        ))
        .await;
    db.close().await.ok();
    let room: i32 = match row? {
        Some(r) => r.try_get("", "room")?,
        None => return Err(sea_orm::DbErr::Custom("no role row".into())),
    };
    Ok(room.max(0) as u32)
}

/// Whether the database answers and takes writes, within [`READY_TIMEOUT`].
pub async fn ready(db: &sea_orm::DatabaseConnection) -> bool {
    let check = async {
        if db.get_database_backend() != DbBackend::Postgres {
            return db.ping().await.is_ok();
        }
        let row = db
            .query_one_raw(Statement::from_string(DbBackend::Postgres, READ_ONLY))
            .await;
        matches!(row, Ok(Some(r)) if r.try_get::<String>("", "transaction_read_only").is_ok_and(|v| v == "off"))
    };
    tokio::time::timeout(READY_TIMEOUT, check)
        .await
        .unwrap_or(false)
}
