//! The `rate_limits` table: one GCRA bucket per limited thing (a keyed digest of a user
//! id, recipient inbox or client IP: none of them in clear). Shared by every replica.
//! The statements themselves are in `buckets.rs`.

use super::buckets::{refused_step, take};
use super::rows::Take;
use super::{Store, Tx};
use crate::domain::Rate;
use crate::error::CoreResult;

pub use super::buckets::Step;

impl Store {
    /// Takes one event from a bucket on its own (so it counts even when the request it
    /// guards is then refused). One statement steps the bucket atomically: no
    /// transaction is needed around it.
    pub async fn take(&self, bucket: &str, rate: Rate, now: i64) -> CoreResult<Step> {
        take(&self.db, bucket, rate, now).await
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

    /// Takes one event from a bucket inside this transaction, now (the waiting writes go
    /// out first).
    pub async fn take(&self, bucket: &str, rate: Rate, now: i64) -> CoreResult<Step> {
        // Optimistic: its statements commit one by one; the step must wait (`take_with_writes`).
        self.locked_only()?;
        take(self.conn().await?, bucket, rate, now).await
    }

    /// Takes one event from a bucket with the transaction's writes: on PostgreSQL the step
    /// waits and goes out with the waiting writes, in their statement, at the next flush
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
            let step = Take {
                bucket: bucket.to_owned(),
                rate,
                now,
                label,
            };
            self.defer_take(step).await?;
            return Ok(Ok(()));
        }
        self.take(bucket, rate, now).await
    }
}
