//! One GCRA bucket's statements on any connection: a step (an upsert that applies only if
//! the event fits, the formula of `Rate::check`), and the read that says how long a
//! refused step must wait. `limits.rs` is the API the core uses; the static statements
//! of `sql/` carry the same step for the steps that ride with a use-case's writes.

use std::time::Duration;

use sea_orm::{ConnectionTrait, EntityTrait, Statement};

use super::entity::rate_limit;
use super::raw;
use crate::domain::Rate;
use crate::error::CoreResult;

/// `Ok(())`: the event fits and was taken; `Err(wait)`: refused, allowed again after `wait`.
pub type Step = Result<(), Duration>;

/// GCRA on a shared row, in ONE statement when allowed: the row is created, locked and
/// stepped in a single round trip. When it does not fit, nothing changes and a read says
/// how long to wait.
pub(super) async fn take<C: ConnectionTrait>(
    db: &C,
    bucket: &str,
    rate: Rate,
    now: i64,
) -> CoreResult<Step> {
    let stepped = db
        .query_one_raw(step_statement(db.get_database_backend(), bucket, rate, now))
        .await?;
    if stepped.is_some() {
        return Ok(Ok(()));
    }
    refused_step(db, bucket, rate, now).await
}

/// The GCRA step of a bucket as one upsert: it returns a row only when the event fits.
fn step_statement(backend: sea_orm::DbBackend, bucket: &str, rate: Rate, now: i64) -> Statement {
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
