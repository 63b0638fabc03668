//! Accepting connections within a cap, whatever the kernel says.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A connection's place under its port's cap; given back when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    port: &'static str,
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::metrics::connection_closed(self.port);
    }
}

/// The connections of `listener`, at most `max` open at once: the next one is accepted
/// only when a slot is free (until then it waits in the kernel's queue). An accept that
/// fails is logged and backed off from, never passed on (a server that retried at once
/// on a full file-descriptor table would spin and starve everything else).
pub fn accept(
    listener: TcpListener,
    max: usize,
    port: &'static str,
) -> impl Stream<Item = (TcpStream, SocketAddr, Slot)> {
    crate::metrics::connection_cap(port, max);
    let slots = Arc::new(Semaphore::new(max));
    futures::stream::unfold(
        (listener, slots, Trouble::default()),
        move |(listener, slots, mut trouble)| async move {
            let permit = slots.clone().acquire_owned().await.ok()?;
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        trouble.over(port);
                        crate::metrics::connection_opened(port);
                        let slot = Slot {
                            _permit: permit,
                            port,
                        };
                        return Some(((stream, peer, slot), (listener, slots, trouble)));
                    }
                    Err(e) => {
                        if let Some(pause) = trouble.failed(port, &e) {
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
            }
        },
    )
}

/// How long a run of failing accepts has lasted, and what was said about it: the first
/// failure of a kind that stops all accepts is logged at WARN at once, then at most
/// every [`Trouble::WARN_EVERY`] with the count since.
#[derive(Default)]
struct Trouble {
    backoff: Duration,
    warned: Option<Instant>,
    unreported: u64,
}

impl Trouble {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);
    const WARN_EVERY: Duration = Duration::from_secs(10);

    /// How long to wait before the next accept (None: at once).
    fn failed(&mut self, port: &'static str, e: &std::io::Error) -> Option<Duration> {
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
    fn over(&mut self, port: &'static str) {
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
