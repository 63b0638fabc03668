//! WatchEvents over gRPC (API.md, "The change feed", and release 3: "The feed and streams
//! cost one query, not one per watcher").
//!
//! - ONE poller per process reads the events table: every [`POLL`] while the feed is idle
//!   (well inside the contract's 1 s), at once again after a full page, and only while
//!   someone watches. It hands each page to every watcher through a broadcast channel: the
//!   database work of the feed does not grow with the number of watchers.
//! - A page says where it starts and ends: every event after `from` up to `to`, of every
//!   type. The poller's pages follow one another without a gap, so a watcher that is where
//!   a page starts misses nothing by taking it; it skips what it has passed (never twice),
//!   and filters by its `types` in memory.
//! - A watcher behind the page it receives — it started from a cursor or from the
//!   beginning, or it read so slowly that the channel dropped pages for it ("lagged") —
//!   reads from its own position up to that page's start itself, then goes on with the
//!   pages: nothing is lost silently. Those reads never go past a position the poller
//!   reached (every event up to it is committed, so they end), and at most
//!   [`READS_AT_ONCE`] of them (and of the reads that find where a watcher starts) run at
//!   once in the process, however many watchers reconnect.
//! - Memory is bounded: a watcher holds at most [`BUFFERED`] unread responses and one
//!   page; the pages kept for slow watchers are shared, [`PAGES_KEPT`] at most for all.
//! - At most `EMAILVERIFY_MAX_WATCHERS` watchers per process (past it RESOURCE_EXHAUSTED
//!   `TOO_MANY_WATCHERS`). A watcher that has read nothing for the idle deadline (60 s)
//!   while events wait for it is closed with UNAVAILABLE, after what it has not yet read:
//!   it resumes from its cursor, and its slot is free for another.
//! - The stream ends when the service stops, so a watcher never holds up a shutdown; it
//!   resumes elsewhere by its cursor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::pb;
use super::status::to_status;
use crate::core::{Core, CoreError, FeedItem};
use crate::store::FeedPos;

pub type WatchStream = ReceiverStream<Result<pb::WatchEventsResponse, Status>>;

/// Responses a watcher may have unread before the server waits for it.
const BUFFERED: usize = 64;
/// Events read per page.
const PAGE: u64 = 256;
/// How often an idle feed is looked at again.
const POLL: Duration = Duration::from_millis(200);
/// How long the poller waits after a failed read.
const RETRY: Duration = Duration::from_secs(1);
/// At most this many `types` (each at most 64 characters): a filter, not a payload.
const MAX_TYPES: usize = 32;
/// Pages kept for watchers that have not taken them yet (shared by all watchers); a
/// watcher further behind reads from its cursor.
const PAGES_KEPT: usize = 32;
/// Reads of its own a watcher may make (where it starts, catching up), at once in the
/// process.
const READS_AT_ONCE: usize = 4;
/// What a watcher refused for `TOO_MANY_WATCHERS` is told to wait.
const FULL_RETRY: Duration = Duration::from_secs(5);

/// A run of the feed: every event after `from`, up to and including `to`, in feed order.
struct Page {
    from: FeedPos,
    to: FeedPos,
    items: Vec<FeedItem>,
}

/// The watchers of one process and the poller they share.
pub struct Watchers {
    core: Arc<Core>,
    /// Cancelled when the service stops: the poller and every watcher end then.
    stop: CancellationToken,
    /// A permit per watcher: `EMAILVERIFY_MAX_WATCHERS`.
    slots: Arc<Semaphore>,
    /// A permit per read a watcher makes itself.
    reads: Semaphore,
    /// A watcher that takes nothing for this long while events wait is closed.
    idle: Duration,
    /// Where the poller is: every page sent so far ends there (`None` while nobody
    /// watches). Locked while a page is sent and while a watcher subscribes, so a
    /// watcher gets every page after the head it is told.
    head: Mutex<Option<FeedPos>>,
    pages: broadcast::Sender<Arc<Page>>,
    /// A watcher subscribed: the poller starts if it was waiting.
    wake: Notify,
}

impl Watchers {
    /// The watchers' shared state, and its poller (running until `stop`).
    pub fn start(
        core: Arc<Core>,
        max_watchers: usize,
        idle: Duration,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let (pages, _) = broadcast::channel(PAGES_KEPT);
        let watchers = Arc::new(Self {
            core,
            stop,
            slots: Arc::new(Semaphore::new(max_watchers)),
            reads: Semaphore::new(READS_AT_ONCE),
            idle,
            head: Mutex::new(None),
            pages,
            wake: Notify::new(),
        });
        tokio::spawn(watchers.clone().poll());
        watchers
    }

    /// The pages from now on, and where the last page sent ended (`None`: the poller is
    /// starting; its first page, empty, says where it starts).
    fn subscribe(&self) -> (broadcast::Receiver<Arc<Page>>, Option<FeedPos>) {
        let head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        let pages = self.pages.subscribe();
        let at = *head;
        drop(head);
        self.wake.notify_one();
        (pages, at)
    }

    /// The shared poller: reads while someone watches, forgets its place when nobody does
    /// (and then reads nothing).
    async fn poll(self: Arc<Self>) {
        let mut warned = false;
        loop {
            let head = {
                let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
                if self.pages.receiver_count() == 0 {
                    *head = None;
                    None
                } else {
                    Some(*head)
                }
            };
            let Some(head) = head else {
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                }
                continue;
            };
            let read = match head {
                // Starting: an empty page that says where.
                None => self.core.feed_head("poll").await.map(|at| Page {
                    from: at,
                    to: at,
                    items: Vec::new(),
                }),
                Some(at) => {
                    self.core
                        .feed_page(at, &[], PAGE, None, "poll")
                        .await
                        .map(|(items, to)| Page {
                            from: at,
                            to,
                            items,
                        })
                }
            };
            let pause = match read {
                Ok(page) => {
                    warned = false;
                    let full = page.items.len() as u64 >= PAGE;
                    if head.is_none() || !page.items.is_empty() {
                        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
                        *head = Some(page.to);
                        // No receiver left: nobody to tell (the next turn forgets the head).
                        let _ = self.pages.send(Arc::new(page));
                    }
                    if full || head.is_none() {
                        Duration::ZERO
                    } else {
                        POLL
                    }
                }
                Err(e) => {
                    // Watchers wait (nothing is lost); they are served when it answers again.
                    if !warned {
                        tracing::warn!(error = %e, "the change feed cannot be read; watchers wait");
                        warned = true;
                    }
                    RETRY
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Waits for a turn to read (a few at once in the process), unless the watcher goes or
    /// the service stops first.
    async fn turn(
        &self,
        tx: &mpsc::Sender<Result<pb::WatchEventsResponse, Status>>,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, End> {
        tokio::select! {
            _ = self.stop.cancelled() => Err(End::Stop),
            _ = tx.closed() => Err(End::Gone),
            permit = self.reads.acquire() => permit.map_err(|_| End::Stop),
        }
    }
}

pub async fn watch(
    watchers: Arc<Watchers>,
    req: Request<pb::WatchEventsRequest>,
) -> Result<Response<WatchStream>, Status> {
    let r = req.into_inner();
    if r.types.len() > MAX_TYPES || r.types.iter().any(|t| t.len() > 64) {
        return Err(Status::invalid_argument(format!(
            "types: at most {MAX_TYPES} event types"
        )));
    }
    let Ok(slot) = watchers.slots.clone().try_acquire_owned() else {
        crate::metrics::watcher_refused();
        let e = CoreError::TooManyWatchers {
            retry_after: FULL_RETRY,
        };
        crate::metrics::refused(e.reason());
        return Err(to_status(e));
    };
    let start = {
        let _turn = watchers.reads.acquire().await;
        watchers
            .core
            .feed_start(&r.after, r.from_beginning)
            .await
            .map_err(to_status)?
    };
    // One more than BUFFERED: room for the last word (see `Watcher::run`).
    let (tx, rx) = mpsc::channel(BUFFERED + 1);
    crate::metrics::watchers(1.0);
    let watcher = Watcher {
        watchers,
        tx,
        types: r.types,
        pos: start,
        _slot: slot,
    };
    tokio::spawn(watcher.run());
    Ok(Response::new(ReceiverStream::new(rx)))
}

/// Why a watcher's stream ends.
enum End {
    /// The watcher went away.
    Gone,
    /// The service stops.
    Stop,
    /// It read nothing for the idle deadline while events waited.
    Idle,
    /// A read failed (the database is away).
    Failed(CoreError),
}

/// One watcher: its position (after the last event it was sent or skipped), its filter,
/// its stream, and its slot.
struct Watcher {
    watchers: Arc<Watchers>,
    tx: mpsc::Sender<Result<pb::WatchEventsResponse, Status>>,
    types: Vec<String>,
    pos: FeedPos,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        crate::metrics::watchers(-1.0);
    }
}

impl Watcher {
    async fn run(mut self) {
        // Room for the last word, whatever the watcher leaves unread (a fresh channel: at
        // once).
        let last = self.tx.clone().reserve_owned().await;
        let status = match self.follow().await {
            End::Gone | End::Stop => return,
            End::Idle => {
                crate::metrics::watcher_closed("idle");
                Status::unavailable(format!(
                    "this watcher read nothing for {}s while events waited: resume from the last cursor you processed",
                    self.watchers.idle.as_secs()
                ))
            }
            // The database is away: say so; the watcher resumes by its cursor.
            End::Failed(e) => to_status(e),
        };
        if let Ok(last) = last {
            last.send(Err(status));
        }
    }

    /// Sends the feed from the watcher's position on: its own reads up to the shared
    /// poller's pages, then the pages.
    async fn follow(&mut self) -> End {
        let (mut pages, head) = self.watchers.subscribe();
        if let Some(head) = head
            && let Err(end) = self.catch_up(head).await
        {
            return end;
        }
        loop {
            let page = tokio::select! {
                _ = self.watchers.stop.cancelled() => return End::Stop,
                _ = self.tx.closed() => return End::Gone,
                page = pages.recv() => page,
            };
            let page = match page {
                Ok(page) => page,
                // Pages were dropped for this watcher: the next one it gets starts past
                // its position, and it reads the gap itself.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    crate::metrics::watcher_lagged();
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return End::Stop,
            };
            if page.to <= self.pos {
                continue;
            }
            if let Err(end) = self.catch_up(page.from).await {
                return end;
            }
            for item in &page.items {
                if item.pos > self.pos
                    && let Err(end) = self.send(item).await
                {
                    return end;
                }
            }
            self.pos = page.to;
        }
    }

    /// Reads from the watcher's position up to `upto` (a position the poller reached), of
    /// its types, page by page, sending each event: afterwards it is at `upto`.
    async fn catch_up(&mut self, upto: FeedPos) -> Result<(), End> {
        while self.pos < upto {
            let read = {
                let _turn = self.watchers.turn(&self.tx).await?;
                self.watchers
                    .core
                    .feed_page(self.pos, &self.types, PAGE, Some(upto), "catch_up")
                    .await
            };
            let (items, last) = read.map_err(End::Failed)?;
            let done = (items.len() as u64) < PAGE;
            for item in &items {
                self.send(item).await?;
            }
            self.pos = if done { upto } else { last };
        }
        Ok(())
    }

    /// Sends one event (of the watcher's types): waits while the watcher's buffer is
    /// full, at most the idle deadline.
    async fn send(&mut self, item: &FeedItem) -> Result<(), End> {
        if !self.types.is_empty() && !self.types.contains(&item.event.event_type) {
            self.pos = item.pos;
            return Ok(());
        }
        let room = tokio::select! {
            _ = self.watchers.stop.cancelled() => return Err(End::Stop),
            room = tokio::time::timeout(self.watchers.idle, self.tx.reserve()) => room,
        };
        match room {
            Ok(Ok(room)) => {
                room.send(Ok(item.clone().into()));
                self.pos = item.pos;
                Ok(())
            }
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Idle),
        }
    }
}
