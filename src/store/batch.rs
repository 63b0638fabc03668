//! `Tx`, a use-case's transaction, and how its writes are batched.
//!
//! Dropping a `Tx` without `commit` rolls everything back, so an error anywhere writes
//! nothing (and queues no mail).
//!
//! Round trips: on PostgreSQL a use-case's writes are not all sent one by one. A write
//! may *wait* in `unsent` and go out with the transaction's next statement, as a
//! data-modifying CTE in front of it (`with_writes`), so a sign-up's writes cost one round
//! trip instead of five. The parts of one PostgreSQL statement run on one snapshot, in no
//! fixed order, and none sees another's changes. So the rule that `queue` relies on, and
//! that every caller of it must keep, is:
//!
//!   **a queued write touches no row that another write of the same statement touches,
//!   and no later statement needs to see it before the queue is flushed.**
//!
//! Two things enforce the second half: every read and update goes through `conn()`, which
//! flushes the queue first (so the transaction always sees its own writes); and the few
//! statements that carry the queue themselves do so only because no queued write touches
//! their table: `Tx::take` (a rate-limit step), `Tx::take_with_writes` (a rate-limit
//! step that waits to be the main part of the next flush, whose refusal is that flush's
//! RATE_LIMITED), and `set_verified_email` (the one update of `users` that can fail: its
//! unique-index violation is EMAIL_TAKEN, and the whole use-case rolls back). What may be
//! queued, then: inserts of fresh rows (token, mail, flow, event), the update of a locked
//! user's *unverified* address (outside the verified-address index, so it cannot fail),
//! and a use-case's last update of its flow (`queue_flow_update`). SQLite runs
//! in-process: there each write executes at once.
//!
//! A locked sign-up is then five round trips on PostgreSQL: BEGIN; the user's lock with
//! the per-user limit's step; the read (verified owner, pending flow, suppression); every
//! write with the per-recipient limit's step; COMMIT. A locked link confirmation is six:
//! BEGIN; the token with its flow; the user's lock with the token's consumption; the flow
//! read again under the lock (`core/confirm.rs`); every write with the address's; COMMIT.
//!
//! The hot use-cases first run OPTIMISTICALLY (`Store::begin_as(true)`, PostgreSQL only;
//! see `optimistic.rs`): no BEGIN, no lock, one pooled connection held for the use-case;
//! the reads are plain statements, and every write, guard and limit step goes in ONE
//! statement at `commit`. Then a sign-up is two statements (the user's row with what the
//! request must know; everything it writes) and so is a confirmation (the token with its
//! flow and user; everything it writes), with one commit each. Every checkout of a pooled
//! connection costs one round trip more: sqlx tests the connection first (a sync), which
//! is what keeps a connection the database dropped from failing a request.

use std::sync::{Arc, Mutex};

use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{AssertSqlSafe, Postgres};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, RuntimeErr, Statement, TransactionTrait,
};
use sea_query_sqlx::SqlxValues;

use super::Store;
use super::combine::with_writes;
use super::optimistic::Plan;
use crate::domain::Rate;
use crate::error::{CoreError, CoreResult};

pub struct Tx {
    handle: Handle,
    unsent: Mutex<Vec<Statement>>,
    /// A rate-limit step to send with the queued writes (`Tx::take_with_writes`).
    deferred_take: Mutex<Option<DeferredTake>>,
    /// Optimistic only: what the one statement at `commit` must check and write.
    plan: Option<Mutex<Plan>>,
    /// What to count once the use-case has committed (`Tx::on_commit`).
    on_commit: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

/// What a use-case's statements run on: its transaction, or (optimistic) one pooled
/// PostgreSQL connection held for the use-case, each statement on its own (autocommit):
/// one checkout for all of them (sqlx tests a connection at each checkout, a round trip).
pub(super) enum Handle {
    Txn(DatabaseTransaction),
    Conn(tokio::sync::Mutex<PoolConnection<Postgres>>),
}

/// A rate-limit step that rides with the queued writes as their statement's main part.
pub(super) struct DeferredTake {
    pub bucket: String,
    pub rate: Rate,
    pub now: i64,
    pub label: &'static str,
}

impl Tx {
    pub(super) async fn begin(db: &DatabaseConnection) -> CoreResult<Self> {
        Ok(Tx {
            handle: Handle::Txn(db.begin().await?),
            unsent: Mutex::new(Vec::new()),
            deferred_take: Mutex::new(None),
            plan: None,
            on_commit: Mutex::new(Vec::new()),
        })
    }

    /// An optimistic use-case (PostgreSQL; SQLite begins a transaction as usual).
    pub(super) async fn optimistic(db: &DatabaseConnection) -> CoreResult<Self> {
        if db.get_database_backend() != DbBackend::Postgres {
            return Self::begin(db).await;
        }
        let conn = db
            .get_postgres_connection_pool()
            .acquire()
            .await
            .map_err(|e| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))))?;
        Ok(Tx {
            handle: Handle::Conn(tokio::sync::Mutex::new(conn)),
            unsent: Mutex::new(Vec::new()),
            deferred_take: Mutex::new(None),
            plan: Some(Mutex::new(Plan::default())),
            on_commit: Mutex::new(Vec::new()),
        })
    }

    /// Whether this use-case runs optimistically (see `optimistic.rs`).
    pub fn is_optimistic(&self) -> bool {
        self.plan.is_some()
    }

    /// The optimistic plan, if this use-case has one.
    pub(super) fn plan(&self) -> Option<std::sync::MutexGuard<'_, Plan>> {
        self.plan
            .as_ref()
            .map(|p| p.lock().expect("optimistic plan"))
    }

    /// For a step that needs the user's lock: an optimistic use-case cannot take it, so it
    /// gives up and runs again locked (`CoreError::needs_lock`).
    pub(super) fn locked_only(&self) -> CoreResult<()> {
        if self.is_optimistic() {
            return Err(CoreError::needs_lock());
        }
        Ok(())
    }

    /// Sets a rate-limit step to go with the queued writes; one waiting before it is sent
    /// first, with the writes queued so far. Optimistic: it joins the plan's steps.
    pub(super) async fn defer_take(
        &self,
        bucket: String,
        rate: Rate,
        now: i64,
        label: &'static str,
    ) -> CoreResult<()> {
        let take = DeferredTake {
            bucket,
            rate,
            now,
            label,
        };
        if let Some(mut plan) = self.plan() {
            return plan.take(take);
        }
        if self.deferred_take.lock().expect("deferred take").is_some() {
            self.flush().await?;
        }
        *self.deferred_take.lock().expect("deferred take") = Some(take);
        Ok(())
    }

    /// Runs `counted` once this use-case has committed, never if it does not (e.g. a
    /// metric: an optimistic try that loses must not count what it did not write).
    pub fn on_commit(&self, counted: impl FnOnce() + Send + 'static) {
        self.on_commit
            .lock()
            .expect("on commit")
            .push(Box::new(counted));
    }

    pub async fn commit(self) -> CoreResult<()> {
        let on_commit = std::mem::take(&mut *self.on_commit.lock().expect("on commit"));
        self.send_and_commit().await?;
        on_commit.into_iter().for_each(|counted| counted());
        Ok(())
    }

    async fn send_and_commit(self) -> CoreResult<()> {
        let unsent = self.take_unsent();
        match self.handle {
            Handle::Txn(txn) => {
                send(
                    &txn,
                    unsent,
                    self.deferred_take.into_inner().expect("deferred"),
                )
                .await?;
                Ok(txn.commit().await?)
            }
            conn @ Handle::Conn(_) => {
                let plan = self.plan.expect("an optimistic Tx has a plan");
                super::optimistic::commit(&conn, plan.into_inner().expect("plan"), unsent).await
            }
        }
    }

    pub(super) fn backend(&self) -> DbBackend {
        self.handle.get_database_backend()
    }

    /// Queues a write that keeps the rule above, to go with the next statement; on
    /// SQLite runs it at once.
    pub(super) async fn queue(&self, stmt: Statement) -> CoreResult<()> {
        if self.backend() == DbBackend::Postgres {
            self.unsent.lock().expect("unsent writes").push(stmt);
            return Ok(());
        }
        self.handle.execute_raw(stmt).await?;
        Ok(())
    }

    /// The queued writes, for a statement that sends them itself (`Tx::take`).
    pub(super) fn take_unsent(&self) -> Vec<Statement> {
        std::mem::take(&mut *self.unsent.lock().expect("unsent writes"))
    }

    /// Sends the queued writes, all in one statement, with the deferred rate-limit step
    /// if there is one (its refusal is this flush's RATE_LIMITED). Optimistic: nothing is
    /// sent before `commit`.
    async fn flush(&self) -> CoreResult<()> {
        if self.is_optimistic() {
            return Ok(());
        }
        let unsent = self.take_unsent();
        let deferred = self.deferred_take.lock().expect("deferred take").take();
        send(&self.handle, unsent, deferred).await
    }

    /// What every read and update uses: the transaction, with the queued writes sent.
    /// Optimistic: the pool as it is; a read then sees what is committed, not this
    /// use-case's queued writes (its reads all come before its writes).
    pub(super) async fn conn(&self) -> CoreResult<&Handle> {
        self.flush().await?;
        Ok(&self.handle)
    }

    /// The transaction as it is, queued writes NOT sent: only for a statement that sends
    /// them itself (`with_writes`).
    pub(super) fn raw_conn(&self) -> &Handle {
        &self.handle
    }
}

/// The queued `writes` in one statement, with `deferred`'s step as its main part if set.
async fn send(
    conn: &impl ConnectionTrait,
    mut writes: Vec<Statement>,
    deferred: Option<DeferredTake>,
) -> CoreResult<()> {
    if let Some(d) = deferred {
        let step = super::limits::take(conn, writes, &d.bucket, d.rate, d.now).await?;
        return step.map_err(|retry_after| CoreError::rate_limited(retry_after, d.label));
    }
    if let Some(last) = writes.pop() {
        conn.execute_raw(with_writes(writes, last)).await?;
    }
    Ok(())
}

/// A sea-orm statement as sqlx runs it (what sea-orm's own PostgreSQL driver does).
fn sqlx_query(stmt: &Statement) -> sea_orm::sqlx::query::Query<'_, Postgres, SqlxValues> {
    let values = stmt.values.clone().unwrap_or(sea_orm::Values(Vec::new()));
    sea_orm::sqlx::query_with(AssertSqlSafe(stmt.sql.as_str()), SqlxValues(values))
}

fn query_err(e: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
}

fn exec_err(e: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e)))
}

// sea-orm declares the trait with async-trait (re-exported by sea-orm-migration).
#[sea_orm_migration::async_trait::async_trait]
impl ConnectionTrait for Handle {
    fn get_database_backend(&self) -> DbBackend {
        match self {
            Handle::Txn(t) => t.get_database_backend(),
            Handle::Conn(_) => DbBackend::Postgres,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self {
            Handle::Txn(t) => t.execute_raw(stmt).await,
            Handle::Conn(c) => {
                let mut c = c.lock().await;
                let done = sqlx_query(&stmt).execute(&mut **c).await;
                done.map(Into::into).map_err(exec_err)
            }
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        match self {
            Handle::Txn(t) => t.execute_unprepared(sql).await,
            Handle::Conn(c) => {
                let mut c = c.lock().await;
                let done = sea_orm::sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut **c)
                    .await;
                done.map(Into::into).map_err(exec_err)
            }
        }
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Handle::Txn(t) => t.query_one_raw(stmt).await,
            Handle::Conn(c) => {
                let mut c = c.lock().await;
                let row = sqlx_query(&stmt).fetch_optional(&mut **c).await;
                row.map(|r| r.map(Into::into)).map_err(query_err)
            }
        }
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Handle::Txn(t) => t.query_all_raw(stmt).await,
            Handle::Conn(c) => {
                let mut c = c.lock().await;
                let rows = sqlx_query(&stmt).fetch_all(&mut **c).await;
                rows.map(|r| r.into_iter().map(Into::into).collect())
                    .map_err(query_err)
            }
        }
    }
}

impl Store {
    /// Writes to different tables, all or none, outside a use-case (the mail worker): on
    /// PostgreSQL one statement (atomic by itself, one round trip), on SQLite one
    /// transaction.
    pub(super) async fn write_together(&self, mut writes: Vec<Statement>) -> CoreResult<()> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            if let Some(last) = writes.pop() {
                self.db.execute_raw(with_writes(writes, last)).await?;
            }
            return Ok(());
        }
        let txn = self.db.begin().await?;
        for w in writes {
            txn.execute_raw(w).await?;
        }
        txn.commit().await?;
        Ok(())
    }
}
