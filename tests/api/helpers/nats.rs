//! A `nats-server -js` of the test's own (a random loopback port, its own store directory,
//! killed when dropped) and what the change feed's publisher put in its stream (API.md, "The
//! change feed"), beside the events table it came from.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream;
use base64::Engine;
use emailverify::grpc::pb;
use futures::StreamExt;
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use super::{free_port, poll_until};

/// The `nats-server` binary; `None` (said) when it is missing and the test may skip, a
/// failure under `CI=true` (`.ci/run` installs it).
pub fn binary(test: &str) -> Option<PathBuf> {
    match crate::connections::which("nats-server") {
        Some(bin) => Some(bin),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("nats-server is not installed (apt-get install nats-server)")
        }
        None => {
            eprintln!("SKIPPED {test}: no nats-server");
            None
        }
    }
}

/// A `nats-server -js` on `port`, storing in `dir` (killed when dropped).
pub async fn server(bin: &Path, port: u16, dir: &Path) -> tokio::process::Child {
    let child = tokio::process::Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nats-server starts");
    let up = poll_until(Duration::from_secs(10), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    assert!(up.is_some(), "nats-server did not listen within 10 s");
    child
}

/// A NATS server with JetStream on a free loopback port, for the whole test.
pub struct Nats {
    pub url: String,
    _server: tokio::process::Child,
    _store: tempfile::TempDir,
}

impl Nats {
    pub async fn start(bin: &Path) -> Self {
        let (port, store) = (free_port(), tempfile::tempdir().unwrap());
        let server = server(bin, port, store.path()).await;
        Self {
            url: format!("nats://127.0.0.1:{port}"),
            _server: server,
            _store: store,
        }
    }
}

/// One message of the stream: its `Nats-Msg-Id`, subject and payload.
pub struct Published {
    pub id: String,
    pub subject: String,
    pub event: pb::WatchEventsResponse,
}

/// Every message of the publisher's stream, in stream order (empty when there is no
/// stream yet or NATS does not answer). Read with a consumer of its own, a thousand at a
/// time; as many as the stream held when the read began.
pub async fn stream_messages(url: &str) -> Vec<Published> {
    let Ok(client) = async_nats::connect(url).await else {
        return Vec::new();
    };
    let js = jetstream::new(client);
    let Ok(mut stream) = js.get_stream(emailverify::publish::STREAM).await else {
        return Vec::new();
    };
    let Ok(info) = stream.info().await else {
        return Vec::new();
    };
    let total = info.state.messages as usize;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::with_capacity(total);
    // Each round reads at least one message, or ends the read.
    for _ in 0..=total {
        if out.len() >= total {
            break;
        }
        let mut batch = consumer
            .fetch()
            .max_messages((total - out.len()).min(1000))
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(Ok(msg)) = batch.next().await {
            let id = msg
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let event = pb::WatchEventsResponse::decode(msg.payload.clone()).unwrap();
            out.push(Published {
                id,
                subject: msg.subject.to_string(),
                event,
            });
        }
        if out.len() == before {
            break;
        }
    }
    out
}

/// The events table's cursors, in feed order (PostgreSQL).
pub async fn table_cursors(db: &DatabaseConnection) -> Vec<String> {
    db.query_all_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT feed_tx, event_id FROM events ORDER BY feed_tx, event_id",
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| {
        let (tx, id): (i64, i64) = (
            r.try_get("", "feed_tx").unwrap(),
            r.try_get("", "event_id").unwrap(),
        );
        cursor(tx, id)
    })
    .collect()
}

/// The cursor of the event at `(feed_tx, event_id)`, as the service writes it.
pub fn cursor(tx: i64, id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("f1:{tx}:{id}"))
}
