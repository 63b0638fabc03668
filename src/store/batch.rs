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
//! A sign-up is then five round trips on PostgreSQL: BEGIN; the user's lock with the
//! per-user limit's step; the read (verified owner, pending flow, suppression); every
//! write with the per-recipient limit's step; COMMIT. A link confirmation is five too:
//! BEGIN; the token with its flow; the user's lock with the token's consumption; every
//! write with the address's; COMMIT.

use std::sync::Mutex;

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    TransactionTrait,
};

use super::Store;
use crate::domain::Rate;
use crate::error::{CoreError, CoreResult};

pub struct Tx {
    txn: DatabaseTransaction,
    unsent: Mutex<Vec<Statement>>,
    /// A rate-limit step to send with the queued writes (`Tx::take_with_writes`).
    deferred_take: Mutex<Option<DeferredTake>>,
}

/// A rate-limit step that rides with the queued writes as their statement's main part.
struct DeferredTake {
    bucket: String,
    rate: Rate,
    now: i64,
    label: &'static str,
}

impl Tx {
    pub(super) async fn begin(db: &DatabaseConnection) -> CoreResult<Self> {
        Ok(Tx {
            txn: db.begin().await?,
            unsent: Mutex::new(Vec::new()),
            deferred_take: Mutex::new(None),
        })
    }

    /// Sets a rate-limit step to go with the queued writes; one waiting before it is sent
    /// first, with the writes queued so far.
    pub(super) async fn defer_take(
        &self,
        bucket: String,
        rate: Rate,
        now: i64,
        label: &'static str,
    ) -> CoreResult<()> {
        if self.deferred_take.lock().expect("deferred take").is_some() {
            self.flush().await?;
        }
        let take = DeferredTake {
            bucket,
            rate,
            now,
            label,
        };
        *self.deferred_take.lock().expect("deferred take") = Some(take);
        Ok(())
    }

    pub async fn commit(self) -> CoreResult<()> {
        self.flush().await?;
        Ok(self.txn.commit().await?)
    }

    pub(super) fn backend(&self) -> DbBackend {
        self.txn.get_database_backend()
    }

    /// Queues a write that keeps the rule above, to go with the next statement; on
    /// SQLite runs it at once.
    pub(super) async fn queue(&self, stmt: Statement) -> CoreResult<()> {
        if self.backend() == DbBackend::Postgres {
            self.unsent.lock().expect("unsent writes").push(stmt);
            return Ok(());
        }
        self.txn.execute_raw(stmt).await?;
        Ok(())
    }

    /// The queued writes, for a statement that sends them itself (`Tx::take`).
    pub(super) fn take_unsent(&self) -> Vec<Statement> {
        std::mem::take(&mut *self.unsent.lock().expect("unsent writes"))
    }

    /// Sends the queued writes, all in one statement, with the deferred rate-limit step
    /// if there is one (its refusal is this flush's RATE_LIMITED).
    async fn flush(&self) -> CoreResult<()> {
        let mut unsent = self.take_unsent();
        let deferred = self.deferred_take.lock().expect("deferred take").take();
        if let Some(d) = deferred {
            let step = super::limits::take(&self.txn, unsent, &d.bucket, d.rate, d.now).await?;
            return step.map_err(|retry_after| {
                crate::metrics::rate_limited(d.label);
                CoreError::RateLimited { retry_after }
            });
        }
        if let Some(last) = unsent.pop() {
            self.txn.execute_raw(with_writes(unsent, last)).await?;
        }
        Ok(())
    }

    /// The transaction, with the queued writes sent: what every read and update uses.
    pub(super) async fn conn(&self) -> CoreResult<&DatabaseTransaction> {
        self.flush().await?;
        Ok(&self.txn)
    }

    /// The transaction as it is, queued writes NOT sent: only for a statement that sends
    /// them itself (`with_writes`).
    pub(super) fn raw_conn(&self) -> &DatabaseTransaction {
        &self.txn
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

/// One PostgreSQL statement that runs `front` as data-modifying CTEs and then `main`
/// (whose result it returns). Each part keeps its own parameters: its `$n` are shifted
/// past the parts before it. Our statements are built with every value bound, so a `$`
/// in their text is always a placeholder.
pub(super) fn with_writes(front: Vec<Statement>, main: Statement) -> Statement {
    if front.is_empty() {
        return main;
    }
    let mut sql = String::new();
    let mut values = Vec::new();
    for (i, part) in front.into_iter().enumerate() {
        sql.push_str(if i == 0 { "WITH " } else { ", " });
        sql.push_str(&format!("w{i} AS ("));
        sql.push_str(&shift_placeholders(&part.sql, values.len()));
        sql.push(')');
        values.extend(part.values.map(|v| v.0).unwrap_or_default());
    }
    sql.push(' ');
    sql.push_str(&shift_placeholders(&main.sql, values.len()));
    values.extend(main.values.map(|v| v.0).unwrap_or_default());
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// `$1` → `$(1 + by)`, for every placeholder in `sql`.
fn shift_placeholders(sql: &str, by: usize) -> String {
    debug_assert!(
        !sql.contains('\''),
        "statements combined by with_writes bind every value: {sql}"
    );
    if by == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while let Some(&(j, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = j + 1;
            chars.next();
        }
        match sql[start..end].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&sql[start..end]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_writes_keep_each_part_s_own_parameters() {
        let pg = |sql: &str, values: Vec<sea_orm::Value>| {
            Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
        };
        let combined = with_writes(
            vec![
                pg("INSERT INTO a VALUES ($1, $2)", vec![1.into(), 2.into()]),
                pg("UPDATE b SET x = $1", vec![3.into()]),
            ],
            pg(
                "INSERT INTO c VALUES ($1, $10) RETURNING y",
                vec![4.into(), 5.into()],
            ),
        );
        assert_eq!(
            combined.sql,
            "WITH w0 AS (INSERT INTO a VALUES ($1, $2)), w1 AS (UPDATE b SET x = $3) \
             INSERT INTO c VALUES ($4, $13) RETURNING y"
        );
        let values: Vec<sea_orm::Value> = combined.values.unwrap().0;
        assert_eq!(
            values,
            vec![1.into(), 2.into(), 3.into(), 4.into(), 5.into()]
        );
    }

    #[test]
    fn a_statement_alone_is_sent_as_it_is() {
        let main = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT $1",
            [sea_orm::Value::from(7)],
        );
        assert_eq!(with_writes(Vec::new(), main.clone()).sql, main.sql);
    }
}
