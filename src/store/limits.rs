//! The `rate_limits` table: one GCRA bucket per limited thing (a digest of a user id,
//! recipient address or client IP: none of them in clear). Shared by every replica.

use std::time::Duration;

use sea_orm::{ConnectionTrait, EntityTrait, Statement};

use super::combine::with_writes;
use super::entity::rate_limit;
use super::{Store, Tx, raw};
use crate::domain::Rate;
use crate::error::CoreResult;

/// `Ok(())`: the event fits and was taken; `Err(wait)`: refused, allowed again after `wait`.
pub type Step = Result<(), Duration>;

impl Store {
    /// Takes one event from a bucket on its own (so it counts even when the request it
    /// guards is then refused). One statement steps the bucket atomically: no
    /// transaction is needed around it.
    pub async fn take(&self, bucket: &str, rate: Rate, now: i64) -> CoreResult<Step> {
        take(&self.db, Vec::new(), bucket, rate, now).await
    }

    /// Whether a bucket would allow one more event now, without taking it.
    pub async fn peek(&self, bucket: &str, rate: Rate, now: i64) -> CoreResult<Step> {
        refused_step(&self.db, bucket, rate, now).await
    }
}

impl Tx {
    /// Whether a bucket would allow one more event now, read inside this transaction
    /// (under the user's lock, so no step of that user's can come between the look and
    /// the take that follows it).
    pub async fn peek(&self, bucket: &str, rate: Rate, now: i64) -> CoreResult<Step> {
        refused_step(self.conn().await?, bucket, rate, now).await
    }

    /// Takes one event from a bucket inside this transaction. No queued write touches
    /// `rate_limits`, so the queue rides along in the same statement (see `batch.rs`).
    pub async fn take(&self, bucket: &str, rate: Rate, now: i64) -> CoreResult<Step> {
        // Optimistic: its statements commit one by one; the step must wait (`take_with_writes`).
        self.locked_only()?;
        let front = self.take_unsent();
        take(self.raw_conn(), front, bucket, rate, now).await
    }

    /// Takes one event from a bucket with the transaction's writes: on PostgreSQL the step
    /// waits and goes out with the queued writes, in their statement, at the next flush
    /// (at the latest, the commit), and a step that does not fit fails that flush with
    /// RATE_LIMITED (`label` names the limit in the metrics), so the use-case rolls back;
    /// here it answers `Ok` meanwhile. On SQLite it is taken at once and answered.
    pub async fn take_with_writes(
        &self,
        bucket: &str,
        rate: Rate,
        now: i64,
        label: &'static str,
    ) -> CoreResult<Step> {
        if self.backend() == sea_orm::DbBackend::Postgres {
            self.defer_take(bucket.to_owned(), rate, now, label).await?;
            return Ok(Ok(()));
        }
        self.take(bucket, rate, now).await
    }
}

/// GCRA on a shared row, in ONE statement when allowed: an upsert whose update applies
/// only if the event fits (the same formula as `Rate::check`), so the row is created,
/// locked and stepped in a single round trip. When it does not fit, nothing changes and a
/// read says how long to wait.
pub(super) async fn take<C: ConnectionTrait>(
    db: &C,
    front: Vec<Statement>,
    bucket: &str,
    rate: Rate,
    now: i64,
) -> CoreResult<Step> {
    let step = step_statement(db.get_database_backend(), bucket, rate, now);
    let stepped = db.query_one_raw(with_writes(front, step)).await?;
    if stepped.is_some() {
        return Ok(Ok(()));
    }
    refused_step(db, bucket, rate, now).await
}

/// The GCRA step of a bucket as one upsert: it returns a row only when the event fits.
pub(super) fn step_statement(
    backend: sea_orm::DbBackend,
    bucket: &str,
    rate: Rate,
    now: i64,
) -> Statement {
    raw(
        backend,
        "INSERT INTO rate_limits (bucket, tat) VALUES ($1, $2) \
             ON CONFLICT (bucket) DO UPDATE \
             SET tat = (CASE WHEN rate_limits.tat > $3 THEN rate_limits.tat ELSE $3 END) + $4 \
             WHERE (CASE WHEN rate_limits.tat > $3 THEN rate_limits.tat ELSE $3 END) + $4 - $5 <= $3 \
             RETURNING tat",
        [
            bucket.into(),
            (now + rate.emission_ms()).into(),
            now.into(),
            rate.emission_ms().into(),
            rate.period_ms().into(),
        ],
    )
}

/// Whether the bucket allows one more event now, and if not how long until it does (a
/// read: a peek, or after a step that did not fit).
pub(super) async fn refused_step<C: ConnectionTrait>(
    db: &C,
    bucket: &str,
    rate: Rate,
    now: i64,
) -> CoreResult<Step> {
    let row = rate_limit::Entity::find_by_id(bucket.to_owned())
        .one(db)
        .await?;
    Ok(rate.check(row.map(|r| r.tat), now).map(|_| ()))
}
