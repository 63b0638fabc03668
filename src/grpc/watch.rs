//! WatchEvents over gRPC: the core's feed, page by page, pushed through a bounded channel.
//! A watcher that does not read fills the channel, and then its reader task waits: the
//! server holds at most [`BUFFERED`] responses and one page per watcher, however slow
//! the watcher. New events are looked for every [`POLL`] when the feed is idle (well
//! inside the contract's 1 s), on every replica alike. The stream ends when the service
//! stops, so a watcher never holds up a shutdown; it resumes elsewhere by its cursor.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::pb;
use super::status::to_status;
use crate::core::{Core, FeedItem};

pub type WatchStream = ReceiverStream<Result<pb::WatchEventsResponse, Status>>;

/// Responses a watcher may have unread before the server waits for it.
const BUFFERED: usize = 64;
/// Events read per page.
const PAGE: u64 = 256;
/// How often an idle feed is looked at again.
const POLL: Duration = Duration::from_millis(200);
/// At most this many `types` (each at most 64 characters): a filter, not a payload.
const MAX_TYPES: usize = 32;

pub async fn watch(
    core: Arc<Core>,
    stop: CancellationToken,
    req: Request<pb::WatchEventsRequest>,
) -> Result<Response<WatchStream>, Status> {
    let r = req.into_inner();
    if r.types.len() > MAX_TYPES || r.types.iter().any(|t| t.len() > 64) {
        return Err(Status::invalid_argument(format!(
            "types: at most {MAX_TYPES} event types"
        )));
    }
    let start = core
        .feed_start(&r.after, r.from_beginning)
        .await
        .map_err(to_status)?;
    let (tx, rx) = mpsc::channel(BUFFERED);
    tokio::spawn(async move {
        let mut pos = start;
        loop {
            match core.feed_page(pos, &r.types, PAGE).await {
                Ok((items, next)) => {
                    let idle = items.is_empty();
                    for item in items {
                        if tx.send(Ok(response(item))).await.is_err() {
                            return; // the watcher went away
                        }
                    }
                    pos = next;
                    if idle {
                        tokio::select! {
                            _ = tx.closed() => return,
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(POLL) => {}
                        }
                    } else if stop.is_cancelled() {
                        return;
                    }
                }
                Err(e) => {
                    // The database is away: say so; the watcher resumes by its cursor.
                    let _ = tx.send(Err(to_status(e))).await;
                    return;
                }
            }
        }
    });
    Ok(Response::new(ReceiverStream::new(rx)))
}

fn response(item: FeedItem) -> pb::WatchEventsResponse {
    item.into()
}
