//! A run of failing accepts on a port: each kind that stops all accepts (EMFILE/ENFILE) is
//! backed off from and logged at WARN, at most every 10 s with the count since.

use std::time::Duration;

use tokio::time::Instant;

/// How long a run of failing accepts has lasted, and what was said about it: the first
/// failure of a kind that stops all accepts is logged at WARN at once, then at most
/// every [`Trouble::WARN_EVERY`] with the count since.
#[derive(Default)]
pub(super) struct Trouble {
    backoff: Duration,
    warned: Option<Instant>,
    unreported: u64,
}

impl Trouble {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);
    const WARN_EVERY: Duration = Duration::from_secs(10);

    /// How long to wait before the next accept (None: at once).
    pub(super) fn failed(&mut self, port: &'static str, e: &std::io::Error) -> Option<Duration> {
        use std::io::ErrorKind::*;
        // EMFILE (24) / ENFILE (23): the process's or the system's table is full.
        let fd_exhausted = matches!(e.raw_os_error(), Some(23 | 24));
        if !fd_exhausted
            && matches!(
                e.kind(),
                ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | TimedOut
            )
        {
            // That one connection is gone before we took it; the next may be fine.
            tracing::debug!(port, error = %e, "accept failed for one connection");
            return None;
        }
        crate::metrics::accept_error(
            port,
            if fd_exhausted {
                "fd_exhausted"
            } else {
                "other"
            },
        );
        self.unreported += 1;
        let now = Instant::now();
        if self.warned.is_none_or(|at| now >= at + Self::WARN_EVERY) {
            let failures = std::mem::take(&mut self.unreported);
            if fd_exhausted {
                tracing::warn!(
                    port,
                    error = %e,
                    failures,
                    "cannot accept connections: the file-descriptor table is full; open connections are still served, new ones wait (raise the open-files limit, e.g. LimitNOFILE, or lower EMAILVERIFY_MAX_CONNECTIONS)"
                );
            } else {
                tracing::warn!(port, error = %e, failures, "cannot accept connections");
            }
            self.warned = Some(now);
        }
        self.backoff = (self.backoff * 2).clamp(Self::FIRST_PAUSE, Self::MAX_PAUSE);
        Some(self.backoff)
    }

    /// An accept succeeded: the run of failures (if any) is over.
    pub(super) fn over(&mut self, port: &'static str) {
        if self.warned.is_some() {
            tracing::info!(
                port,
                failures = self.unreported,
                "accepting connections again"
            );
        }
        *self = Self::default();
    }
}
