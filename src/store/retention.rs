//! Retention (API.md, "Erasure and retention"): old rows leave in batches of at most
//! [`PRUNE_BATCH`], one statement each. On PostgreSQL the batch is picked `FOR UPDATE SKIP
//! LOCKED`, so replicas pruning at once take different rows and nobody waits for long;
//! each statement commits on its own (no long transactions). SQLite has one writer.

use sea_orm::{ConnectionTrait, DbBackend};

use super::{Store, raw};
use crate::error::CoreResult;

/// Rows deleted by one statement, at most.
pub const PRUNE_BATCH: u64 = 1000;

/// What retention removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prunable {
    /// Sent, dead or replaced mails older than `EMAILVERIFY_RETAIN_MAIL`.
    Mail,
    /// Tokens that expired or were used longer ago than the token retention (7 days).
    Tokens,
    /// Events older than `EMAILVERIFY_RETAIN_EVENTS`.
    Events,
    /// Flows that ended (not pending) longer ago than `EMAILVERIFY_RETAIN_EVENTS`.
    Flows,
    /// Rate-limit buckets that have drained: a bucket whose next allowed time (`tat`) is
    /// before the cutoff allows exactly what a missing bucket allows. Erasure keeps
    /// buckets (they hold no personal data), so this is what bounds the table.
    Limits,
}

impl Prunable {
    pub const ALL: [Prunable; 5] = [
        Prunable::Mail,
        Prunable::Tokens,
        Prunable::Events,
        Prunable::Flows,
        Prunable::Limits,
    ];

    /// The table, as metrics name it.
    pub fn table(self) -> &'static str {
        match self {
            Prunable::Mail => "outbox",
            Prunable::Tokens => "tokens",
            Prunable::Events => "events",
            Prunable::Flows => "flows",
            Prunable::Limits => "rate_limits",
        }
    }
}

impl Store {
    /// Deletes one batch of `what` older than `cutoff` (Unix ms); how many rows went.
    pub async fn prune(&self, what: Prunable, cutoff: i64) -> CoreResult<u64> {
        let backend = self.db.get_database_backend();
        let lock = match backend {
            DbBackend::Postgres => "FOR UPDATE SKIP LOCKED",
            _ => "",
        };
        let (table, id, old) = match what {
            Prunable::Mail => (
                "outbox",
                "mail_id",
                "state IN ('sent', 'dead', 'retried') AND created_at < $1",
            ),
            Prunable::Tokens => ("tokens", "digest", "(expires_at < $1 OR used_at < $1)"),
            Prunable::Events => ("events", "event_id", "at < $1"),
            Prunable::Flows => ("flows", "flow_id", "state <> 'pending' AND updated_at < $1"),
            Prunable::Limits => ("rate_limits", "bucket", "tat < $1"),
        };
        let sql = format!(
            "DELETE FROM {table} WHERE {id} IN \
               (SELECT {id} FROM {table} WHERE {old} LIMIT $2 {lock})"
        );
        let values = [cutoff.into(), (PRUNE_BATCH as i64).into()];
        Ok(self
            .db
            .execute_raw(raw(backend, &sql, values))
            .await?
            .rows_affected())
    }
}
