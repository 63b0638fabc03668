//! How a hot use-case is tried (RequestVerification, RequestChange, ConfirmLink): on
//! PostgreSQL, unless `EMAILVERIFY_OPTIMISTIC` is off, optimistically first (`optimistic.rs`)
//! and, while a concurrent change beats it, again; the last try takes the locks, so it
//! always ends. The store decides how each try runs: the core writes the use-case once,
//! and each try starts its `Tx` from the `Attempt` it is given.

use std::future::Future;

use super::{Store, Tx};
use crate::error::{CoreError, CoreResult};

/// Optimistic tries before the locked one.
const OPTIMISTIC_TRIES: usize = 2;

/// One try of a hot use-case (`Store::attempts`): `begin` starts its `Tx` in the mode the
/// store chose for it.
pub struct Attempt<'s> {
    store: &'s Store,
    optimistic: bool,
}

impl Attempt<'_> {
    /// The try's unit of work: optimistic (see `optimistic.rs`) or a transaction.
    pub async fn begin(self) -> CoreResult<Tx> {
        if self.optimistic {
            return Tx::optimistic(&self.store.db).await;
        }
        Tx::begin(&self.store.db).await
    }
}

impl Store {
    /// Runs `run` once per try until one ends (see the module doc); each optimistic try's
    /// result is counted in `emailverify_optimistic_tries_total{use_case, result}`.
    pub async fn attempts<'s, T, F, Fut>(&'s self, use_case: &'static str, run: F) -> CoreResult<T>
    where
        F: Fn(Attempt<'s>) -> Fut,
        Fut: Future<Output = CoreResult<T>>,
    {
        if self.is_postgres() && self.optimistic {
            for _ in 0..OPTIMISTIC_TRIES {
                let done = run(Attempt {
                    store: self,
                    optimistic: true,
                })
                .await;
                match done
                    .as_ref()
                    .err()
                    .and_then(CoreError::contended_needs_lock)
                {
                    Some(true) => {
                        crate::metrics::optimistic(use_case, "needs_lock");
                        break;
                    }
                    Some(false) => crate::metrics::optimistic(use_case, "ran_again"),
                    None => {
                        crate::metrics::optimistic(use_case, "ended");
                        return done;
                    }
                }
            }
        }
        run(Attempt {
            store: self,
            optimistic: false,
        })
        .await
    }
}
