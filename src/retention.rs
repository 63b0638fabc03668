//! The retention task: on every replica, every `every` (and once at start), each kind of
//! old row is pruned in batches (`store::retention`) until a batch comes back short, and
//! what went is counted (`emailverify_retention_pruned_total{table}`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, duration_ms};
use crate::settings::Retention as Keep;
use crate::store::{PRUNE_BATCH, Prunable, Store};

/// Tokens that can no longer be used stay this long (API.md).
const RETAIN_TOKENS: Duration = Duration::from_secs(7 * 24 * 3600);
/// Batches per kind of row per round, at most: a large backlog is worked off over rounds.
const BATCHES_PER_ROUND: usize = 100;

pub struct Retention {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// How long each kind of row stays, and how often to prune.
    pub keep: Keep,
}

impl From<(Store, Arc<dyn Clock>, Keep)> for Retention {
    fn from((store, clock, keep): (Store, Arc<dyn Clock>, Keep)) -> Self {
        Self { store, clock, keep }
    }
}

impl Retention {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            self.round(&stop).await;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.keep.every) => {}
            }
        }
    }

    /// One pass over every kind of row; the number of rows pruned of each.
    pub async fn round(&self, stop: &CancellationToken) -> Vec<(Prunable, u64)> {
        let mut pruned = Vec::new();
        for what in Prunable::ALL {
            let keep = match what {
                Prunable::Mail => self.keep.retain_mail,
                Prunable::Tokens => RETAIN_TOKENS,
                Prunable::Events | Prunable::Flows => self.keep.retain_events,
                // A drained bucket is the same as none: it may go at once.
                Prunable::Limits => Duration::ZERO,
            };
            let cutoff = self.clock.now_ms() - duration_ms(keep);
            let mut total = 0;
            for _ in 0..BATCHES_PER_ROUND {
                if stop.is_cancelled() {
                    break;
                }
                match self.store.prune(what, cutoff).await {
                    Ok(n) => {
                        total += n;
                        crate::metrics::pruned(what.table(), n);
                        if n < PRUNE_BATCH {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(table = what.table(), error = %e, "retention could not prune");
                        break;
                    }
                }
            }
            if total > 0 {
                tracing::info!(table = what.table(), rows = total, "old rows pruned");
            }
            pruned.push((what, total));
        }
        pruned
    }
}
