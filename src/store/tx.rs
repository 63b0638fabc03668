//! `Tx`, a use-case's unit of work, in one of three modes (`Mode`).
//!
//! Dropping a `Tx` without `commit` writes nothing (and queues no mail).
//!
//! Round trips on PostgreSQL: a use-case's fresh rows (a token, a mail, a flow, an event)
//! and its last update of its flow do not go out one by one. They wait in `Rows` and go
//! out together in ONE static statement: `sql/writes.sql` (locked), sent before the
//! use-case's next read or at its commit, or `sql/request.sql` / `sql/confirm.sql`
//! (optimistic), the
//! use-case's only write. The parts of one statement run on one snapshot, in no fixed
//! order, and none sees another's changes. So the rule every waiting write keeps is:
//!
//!   **a waiting write touches no row that another write of the same statement touches,
//!   and no later statement needs to see it before the rows are sent.**
//!
//! Every read and update goes through `conn()`, which sends the waiting rows first (so
//! the transaction always sees its own writes). What may wait: inserts of fresh rows, the
//! update of a locked user's address (`set_unverified_email`; `set_verified_email` waits
//! and is sent at once, as its unique index may refuse it: EMAIL_TAKEN), a use-case's
//! last update of its flow (`queue_flow_update`), and a rate-limit step that rides with
//! them (`take_with_writes`: its refusal is the flush's RATE_LIMITED). SQLite runs
//! in-process: there each write executes at once.
//!
//! A locked sign-up is then five round trips on PostgreSQL: BEGIN; the user's lock with
//! the per-user limit's step (`sql/lock_user_taking.sql`); the read (verified owner,
//! pending flow, suppression); every write with the per-recipient limit's step
//! (`sql/writes.sql`); COMMIT. An optimistic one is two statements: the user's row with
//! what the request must know; `sql/request.sql` (see `optimistic.rs`).

use std::sync::{Arc, Mutex};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, RuntimeErr, Statement, TransactionTrait,
};

use super::error::database_error;
use super::handle::Handle;
use super::optimistic::Plan;
use super::rows::{Rows, Take, UserSet, address_row, array};
use super::{Store, statements};
use crate::error::{CoreError, CoreResult};

pub struct Tx {
    handle: Handle,
    mode: Mode,
    /// What to count once the use-case has committed (`Tx::on_commit`).
    on_commit: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

/// How a use-case's writes reach the database.
enum Mode {
    /// SQLite: a transaction; each write runs at once.
    Direct,
    /// PostgreSQL, locked: a transaction; its rows wait and go out together
    /// (`sql/writes.sql`) before its next statement and at its commit.
    Batched(Box<Mutex<Batch>>),
    /// PostgreSQL, optimistic: no transaction and no lock; its reads run on one held
    /// connection, and everything it writes goes out at commit as ONE guarded statement
    /// (`sql/request.sql`, `sql/confirm.sql`: `optimistic.rs`).
    Optimistic(Box<Mutex<Plan>>),
}

/// A locked PostgreSQL use-case's writes that wait.
#[derive(Default)]
struct Batch {
    rows: Rows,
    /// The user's address to set: (user id, address).
    address: Option<(String, UserSet)>,
    /// A rate-limit step to take with the rows (`Tx::take_with_writes`).
    step: Option<Take>,
}

impl Tx {
    pub(super) async fn begin(db: &DatabaseConnection) -> CoreResult<Self> {
        let mode = match db.get_database_backend() {
            DbBackend::Postgres => Mode::Batched(Box::default()),
            _ => Mode::Direct,
        };
        Ok(Tx {
            handle: Handle::Txn(db.begin().await?),
            mode,
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
            mode: Mode::Optimistic(Box::default()),
            on_commit: Mutex::new(Vec::new()),
        })
    }

    /// Whether this use-case runs optimistically (see `optimistic.rs`).
    pub fn is_optimistic(&self) -> bool {
        matches!(self.mode, Mode::Optimistic(_))
    }

    /// The optimistic plan, if this use-case has one.
    pub(super) fn plan(&self) -> Option<std::sync::MutexGuard<'_, Plan>> {
        match &self.mode {
            Mode::Optimistic(plan) => Some(plan.lock().expect("optimistic plan")),
            _ => None,
        }
    }

    /// For a step that needs the user's lock: an optimistic use-case cannot take it, so it
    /// gives up and runs again locked (`CoreError::needs_lock`).
    pub(super) fn locked_only(&self) -> CoreResult<()> {
        if self.is_optimistic() {
            return Err(CoreError::needs_lock());
        }
        Ok(())
    }

    /// Adds rows that may wait (see the module doc): `Ok(true)` when they wait, `Ok(false)`
    /// on SQLite, where the caller writes them at once.
    pub(super) fn wait(&self, add: impl FnOnce(&mut Rows)) -> bool {
        match &self.mode {
            Mode::Direct => false,
            Mode::Batched(batch) => {
                add(&mut batch.lock().expect("batch").rows);
                true
            }
            Mode::Optimistic(plan) => {
                add(plan.lock().expect("optimistic plan").rows());
                true
            }
        }
    }

    /// A user's address that may wait (locked: `writes.sql`; optimistic: the plan's user).
    pub(super) async fn set_address(&self, user_id: &str, set: UserSet) -> CoreResult<bool> {
        match &self.mode {
            Mode::Direct => Ok(false),
            Mode::Batched(batch) => {
                let waiting = batch.lock().expect("batch").address.is_some();
                if waiting {
                    self.flush().await?;
                }
                batch.lock().expect("batch").address = Some((user_id.to_owned(), set));
                Ok(true)
            }
            Mode::Optimistic(plan) => {
                plan.lock().expect("optimistic plan").set_user(set)?;
                Ok(true)
            }
        }
    }

    /// Sets a rate-limit step to go with the waiting writes; one waiting before it is sent
    /// first, with the writes so far. Optimistic: it joins the plan's steps.
    pub(super) async fn defer_take(&self, take: Take) -> CoreResult<()> {
        match &self.mode {
            Mode::Direct => unreachable!("SQLite takes its steps at once"),
            Mode::Optimistic(plan) => plan.lock().expect("optimistic plan").take(take),
            Mode::Batched(batch) => {
                let waiting = batch.lock().expect("batch").step.is_some();
                if waiting {
                    self.flush().await?;
                }
                batch.lock().expect("batch").step = Some(take);
                Ok(())
            }
        }
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
        self.flush().await?;
        match (self.handle, self.mode) {
            (Handle::Txn(txn), _) => Ok(txn.commit().await?),
            (conn @ Handle::Conn(_), Mode::Optimistic(plan)) => {
                super::optimistic::commit(&conn, plan.into_inner().expect("plan")).await
            }
            (Handle::Conn(_), _) => unreachable!("only an optimistic Tx holds a bare connection"),
        }
    }

    pub(super) fn backend(&self) -> DbBackend {
        self.handle.get_database_backend()
    }

    /// Sends the waiting writes of a locked PostgreSQL use-case, all in one statement
    /// (`sql/writes.sql`), with the rate-limit step waiting with them, if any (its refusal
    /// is this flush's RATE_LIMITED). Optimistic and SQLite: nothing waits to be sent here.
    async fn flush(&self) -> CoreResult<()> {
        let Mode::Batched(batch) = &self.mode else {
            return Ok(());
        };
        let batch = std::mem::take(&mut *batch.lock().expect("batch"));
        if batch.rows.is_empty() && batch.address.is_none() && batch.step.is_none() {
            return Ok(());
        }
        let verifies = batch.address.as_ref().is_some_and(|(_, a)| a.verified);
        let address: Vec<_> = batch
            .address
            .iter()
            .map(|(user, set)| address_row(user, set))
            .collect();
        let steps: Vec<_> = batch.step.iter().map(Take::row).collect();
        let [flows, moved, tokens, mails, events] = batch.rows.params();
        let values = [
            array(&address),
            flows,
            moved,
            tokens,
            mails,
            events,
            array(&steps),
        ];
        let stmt = Statement::from_sql_and_values(DbBackend::Postgres, statements::WRITES, values);
        let row = match self.handle.query_one_raw(stmt).await {
            Ok(row) => row,
            Err(e) => return Err(refused_address(verifies, e)),
        };
        let Some(take) = batch.step else {
            return Ok(());
        };
        let stepped: i64 = match row {
            Some(r) => r.try_get("", "stepped")?,
            None => 0,
        };
        if stepped == 1 {
            return Ok(());
        }
        let refused = super::buckets::refused_step(&self.handle, &take.bucket, take.rate, take.now);
        // `Ok`: it fits again already (a moment passed); as before this statement.
        refused
            .await?
            .map_err(|retry_after| CoreError::rate_limited(retry_after, take.label))
    }

    /// What every read and update uses: the transaction, with the waiting writes sent.
    /// Optimistic: the held connection as it is; a read then sees what is committed, not
    /// this use-case's writes (its reads all come before its writes).
    pub(super) async fn conn(&self) -> CoreResult<&Handle> {
        self.flush().await?;
        Ok(&self.handle)
    }
}

/// A flush that set a verified address and tripped the index of verified addresses:
/// another user won that inbox (EMAIL_TAKEN); any other error as it is.
pub(super) fn refused_address(verifies: bool, e: DbErr) -> CoreError {
    match database_error(&e) {
        Some(found)
            if verifies
                && found.code == "23505"
                && found.constraint.starts_with("users_verified_") =>
        {
            CoreError::EmailTaken
        }
        _ => e.into(),
    }
}

impl Store {
    /// Writes to different tables, all or none, outside a use-case (the mail worker's
    /// failed attempt and its event): one transaction.
    pub(super) async fn write_together(&self, writes: Vec<Statement>) -> CoreResult<()> {
        let txn = self.db.begin().await?;
        for w in writes {
            txn.execute_raw(w).await?;
        }
        txn.commit().await?;
        Ok(())
    }
}
