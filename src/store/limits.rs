//! The `rate_limits` table: one GCRA bucket per limited thing (a digest of a user id,
//! recipient address or client IP: none of them in clear). Shared by every replica.

use std::time::Duration;

use sea_orm::{ConnectionTrait, EntityTrait, Statement};

use super::batch::with_writes;
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
        let row = rate_limit::Entity::find_by_id(bucket.to_owned())
            .one(&self.db)
            .await?;
        Ok(rate.check(row.map(|r| r.tat), now).map(|_| ()))
    }
}

impl Tx {
    /// Takes one event from a bucket inside this transaction. No queued write touches
    /// `rate_limits`, so the queue rides along in the same statement (see `batch.rs`).
    pub async fn take(&self, bucket: &str, rate: Rate, now: i64) -> CoreResult<Step> {
        let front = self.take_unsent();
        take(self.raw_conn(), front, bucket, rate, now).await
    }
}

/// GCRA on a shared row, in ONE statement when allowed: an upsert whose update applies
/// only if the event fits (the same formula as `Rate::check`), so the row is created,
/// locked and stepped in a single round trip. When it does not fit, nothing changes and a
/// read says how long to wait.
async fn take<C: ConnectionTrait>(
    db: &C,
    front: Vec<Statement>,
    bucket: &str,
    rate: Rate,
    now: i64,
) -> CoreResult<Step> {
    let step = raw(
        db.get_database_backend(),
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
    );
    let stepped = db.query_one_raw(with_writes(front, step)).await?;
    if stepped.is_some() {
        return Ok(Ok(()));
    }
    let row = rate_limit::Entity::find_by_id(bucket.to_owned())
        .one(db)
        .await?;
    Ok(rate.check(row.map(|r| r.tat), now).map(|_| ()))
}
