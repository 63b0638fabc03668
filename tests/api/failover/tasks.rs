//! The background tasks across the switch, with nothing restarted: the change feed's
//! publisher to NATS (its advisory lock, its position in the stream) and retention's
//! batches resume on the new primary on their own.

use std::time::{Duration, Instant};

use base64::Engine;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::helpers::nats::{stream_messages, table_cursors};
use crate::helpers::{count, eventually, poll_until};

type Pos = (i64, i64);

/// The feed position of `user`'s first event on `db`, if it has one.
async fn first_event_of(db: &DatabaseConnection, user: &str) -> Option<Pos> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT feed_tx, event_id FROM events WHERE user_id = $1 \
             ORDER BY feed_tx, event_id LIMIT 1",
            [user.into()],
        ))
        .await
        .unwrap()?;
    Some((
        row.try_get("", "feed_tx").unwrap(),
        row.try_get("", "event_id").unwrap(),
    ))
}

/// The feed position of the stream's last message (its `Nats-Msg-Id`, decoded).
async fn last_published(url: &str) -> Option<Pos> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.ok()?);
    let mut stream = js.get_stream(emailverify::publish::STREAM).await.ok()?;
    let last = stream.info().await.ok()?.state.last_sequence;
    let msg = stream.get_raw_message(last).await.ok()?;
    let id = msg.headers.get("Nats-Msg-Id")?.as_str().to_owned();
    let plain = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .ok()?;
    let plain = String::from_utf8(plain).ok()?;
    let mut parts = plain.strip_prefix("f1:")?.split(':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// How many messages the stream holds (0 when it cannot be read).
async fn stream_len(url: &str) -> u64 {
    let Ok(client) = async_nats::connect(url).await else {
        return 0;
    };
    let js = async_nats::jetstream::new(client);
    match js.get_stream(emailverify::publish::STREAM).await {
        Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}

/// Watches the stream from now (call it while the publisher cannot publish: no primary):
/// the task ends with how long after `since` the stream first grew, i.e. the publisher
/// published again (asked every 100 ms, for at most a minute).
pub async fn publisher_watch(
    url: &str,
    since: Instant,
) -> tokio::task::JoinHandle<Option<Duration>> {
    let url = url.to_owned();
    let before = stream_len(&url).await;
    tokio::spawn(async move {
        let client = async_nats::connect(url.as_str()).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(emailverify::publish::STREAM).await.ok()?;
        for _ in 0..600 {
            if stream.info().await.is_ok_and(|i| i.state.messages > before) {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    })
}

/// How long after `promoted` the publisher had published `user`'s first event, which the
/// new primary committed after the promotion (the publisher publishes in feed order).
pub async fn publisher_resumed(
    url: &str,
    new: &DatabaseConnection,
    user: &str,
    promoted: Instant,
) -> Duration {
    let first = eventually(
        "the sign-up after the promotion is in the feed",
        Duration::from_secs(10),
        async || first_event_of(new, user).await,
    )
    .await;
    eventually(
        "the publisher publishes what the new primary committed",
        Duration::from_secs(60),
        async || (last_published(url).await? >= first).then(|| promoted.elapsed()),
    )
    .await
}

/// `user`'s mail rows on `db`.
fn mails_of(user: &str) -> String {
    format!("outbox WHERE user_id = '{user}'")
}

/// Asserts that `user`'s mail, queued on the new primary after the promotion, is in its
/// outbox now (call it at once: it stays for `EMAILVERIFY_RETAIN_MAIL` after it was queued).
pub async fn mail_is_queued(new: &DatabaseConnection, user: &str) {
    assert!(
        count(new, &mails_of(user)).await > 0,
        "the mail of the sign-up after the promotion is in the outbox"
    );
}

/// How long after `promoted` retention had deleted `user`'s mail (sent, and older than
/// `EMAILVERIFY_RETAIN_MAIL`).
pub async fn retention_resumed(
    new: &DatabaseConnection,
    user: &str,
    promoted: Instant,
) -> Duration {
    eventually(
        "retention deletes the mail queued after the promotion",
        Duration::from_secs(60),
        async || (count(new, &mails_of(user)).await == 0).then(|| promoted.elapsed()),
    )
    .await
}

/// Asserts that the stream holds every event of `new`'s table once, in feed order, each
/// with its cursor as `Nats-Msg-Id` and in its payload: what was published across the
/// switch has no gap and no repeat. Waits (at most a minute) for the publisher to catch
/// up with the table, which may still grow; the number of messages.
pub async fn assert_the_stream_is_the_table(url: &str, new: &DatabaseConnection) -> usize {
    let mut last = (Vec::new(), Vec::new());
    let same = poll_until(Duration::from_secs(60), async || {
        let table = table_cursors(new).await;
        let stream: Vec<String> = stream_messages(url)
            .await
            .into_iter()
            .map(|m| m.id)
            .collect();
        let done = stream == table;
        last = (table, stream);
        done.then_some(())
    })
    .await;
    let (table, stream) = last;
    assert!(
        same.is_some(),
        "the stream is not the new primary's events table: {} messages, {} events, first \
         difference at {:?}",
        stream.len(),
        table.len(),
        stream.iter().zip(&table).position(|(a, b)| a != b)
    );
    let messages = stream_messages(url).await;
    for m in &messages {
        assert_eq!(m.id, m.event.cursor, "the header is the payload's cursor");
    }
    // The publisher holds its advisory lock on the new primary: nothing else takes one.
    assert_eq!(
        count(new, "pg_locks WHERE locktype = 'advisory' AND granted").await,
        1,
        "the publisher leads from the new primary"
    );
    messages.len()
}
