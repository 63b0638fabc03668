//! Publication of the change feed to NATS JetStream (`EMAILVERIFY_EVENTS_NATS_URL`, API.md
//! "The change feed"): every event, in feed order, to subject `emailverify.events.<type>`,
//! payload the `WatchEventsResponse` in protobuf, header `Nats-Msg-Id` = its cursor (so
//! JetStream drops a duplicate).
//!
//! - One replica publishes at a time: the one holding a PostgreSQL advisory lock on a
//!   connection of its own (released by PostgreSQL when that process dies, kill -9
//!   included). SQLite is one process: it always publishes.
//! - It resumes after the last message the stream holds (its `Nats-Msg-Id` is the cursor),
//!   so nothing acknowledged is sent again and nothing is skipped, across restarts of
//!   either side. Each page's publications are awaited for their acknowledgements before
//!   the next page.
//! - While NATS is down the task retries with a pause; requests never wait for it (it has
//!   its own database connection).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::core::Core;
use crate::error::CoreError;
use crate::grpc::pb;
use crate::store::Store;

/// The JetStream stream the feed goes to, and its subjects.
pub const STREAM: &str = "EMAILVERIFY_EVENTS";
pub const SUBJECTS: &str = "emailverify.events.>";
/// The advisory lock that makes one replica the publisher.
const LEADER_LOCK: i64 = 0x6576_5f66_6565_6431; // "ev_feed1"
const PAGE: u64 = 256;
const IDLE: Duration = Duration::from_millis(200);
const RETRY: Duration = Duration::from_secs(1);

pub struct Publisher {
    pub core: Arc<Core>,
    /// A single connection of its own: it holds the leader lock.
    pub leader: Store,
    pub url: String,
}

/// Starts the publisher when `EMAILVERIFY_EVENTS_NATS_URL` is set.
pub async fn start(
    config: &crate::settings::Config,
    core: Arc<Core>,
    store: &Store,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(url) = config.events_nats_url.clone() {
        let leader = store.alone(&config.database_url).await?;
        tokio::spawn(Publisher { core, leader, url }.run(stop));
    }
    Ok(())
}

impl Publisher {
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!("publishing the change feed to NATS JetStream");
        let mut warned = false;
        while !stop.is_cancelled() {
            if let Err(e) = self.session(&stop).await {
                if !warned {
                    tracing::warn!(error = %e, "cannot publish the change feed to NATS; events wait, nothing is lost");
                    warned = true;
                }
            } else {
                warned = false;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// Connects, waits to lead, resumes after the stream's last message, and publishes
    /// until something fails (then the caller pauses and starts over).
    async fn session(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(self.url.as_str())
            .await?;
        let js = jetstream::new(client);
        let mut stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: STREAM.into(),
                subjects: vec![SUBJECTS.into()],
                ..Default::default()
            })
            .await?;
        while !self.leader.try_lead(LEADER_LOCK).await? {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
        let last = stream.info().await?.state.last_sequence;
        let after = if last == 0 {
            String::new()
        } else {
            let msg = stream.get_raw_message(last).await?;
            msg.headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let mut pos = match self.core.feed_start(&after, after.is_empty()).await {
            Ok(pos) => pos,
            Err(CoreError::CursorExpired) => {
                tracing::warn!(
                    "events were pruned before they were published; publishing from the oldest kept"
                );
                self.core.feed_start("", true).await?
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(
            stream_messages = last,
            "leading the change feed's publication"
        );
        loop {
            if stop.is_cancelled() || !self.leader.try_lead(LEADER_LOCK).await? {
                return Ok(());
            }
            let (items, next) = self.core.feed_page(pos, &[], PAGE, None, "publish").await?;
            if items.is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(IDLE) => {}
                }
                continue;
            }
            let mut acks = Vec::with_capacity(items.len());
            for item in items {
                let subject = format!(
                    "emailverify.events.{}",
                    item.event.event_type.replace(['.', '*', '>', ' '], "_")
                );
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", item.cursor.as_str());
                let payload = pb::WatchEventsResponse::from(item).encode_to_vec();
                acks.push(
                    js.publish_with_headers(subject, headers, payload.into())
                        .await?,
                );
            }
            for ack in acks {
                ack.await?;
            }
            pos = next;
        }
    }
}
