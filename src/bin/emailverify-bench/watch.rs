//! `--watch`: a WatchEvents watcher connected (on its own connection) through the burst,
//! to measure the feed under the sign-up load: events received per second, and the time
//! from each sign-up's answer to its `verification_requested` event at the watcher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emailverify::grpc::pb::{self, EmailVerificationClient};

#[derive(Default)]
pub struct Seen {
    /// When each user's `verification_requested` arrived.
    pub requested: HashMap<String, Instant>,
    pub events: usize,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
}

/// Connects a watcher (events from now on) and records what arrives, until the process
/// ends.
pub async fn start(grpc_port: u16) -> anyhow::Result<Arc<Mutex<Seen>>> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))?
        .connect()
        .await?;
    let mut stream = EmailVerificationClient::new(channel)
        .watch_events(pb::WatchEventsRequest::default())
        .await?
        .into_inner();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(item)) = stream.message().await {
            let now = Instant::now();
            let mut s = record.lock().unwrap();
            s.events += 1;
            s.first.get_or_insert(now);
            s.last = Some(now);
            if item.event.as_ref().map(|e| e.r#type.as_str()) == Some("verification_requested") {
                s.requested.insert(item.user_id, now);
            }
        }
    });
    Ok(seen)
}

/// The report line: feed rate, and answer-to-watcher latency of the sign-ups.
pub fn report(seen: &Seen, answered: &[(String, Instant)]) -> String {
    let mut lat: Vec<Duration> = answered
        .iter()
        .filter_map(|(user, done)| {
            seen.requested
                .get(user)
                .map(|at| at.saturating_duration_since(*done))
        })
        .collect();
    lat.sort();
    let pct = |q: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * q).round() as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let span = match (seen.first, seen.last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64().max(0.001),
        _ => 1.0,
    };
    format!(
        "feed: {} events at the watcher ({:.0} events/s while they came); {} of {} sign-ups seen; answer → watcher p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        seen.events,
        seen.events as f64 / span,
        lat.len(),
        answered.len(),
        pct(0.5),
        pct(0.99),
        lat.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
    )
}

/// `n` WatchEvents watchers ("from now on") that never read, spread over connections of
/// their own, 50 streams each (the service allows 100 per connection): what a caller can
/// hold open. Dropped, they go.
pub async fn idle_watchers(
    grpc_port: u16,
    n: usize,
) -> anyhow::Result<Vec<tonic::Streaming<pb::WatchEventsResponse>>> {
    use futures::StreamExt;
    let mut clients = Vec::new();
    for _ in 0..n.div_ceil(50) {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))?
                .connect()
                .await?;
        clients.push(EmailVerificationClient::new(channel));
    }
    let opened: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            async move { c.watch_events(pb::WatchEventsRequest::default()).await }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    opened.into_iter().map(|r| Ok(r?.into_inner())).collect()
}
