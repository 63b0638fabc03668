//! The change feed on NATS JetStream (API.md, "The change feed"): with
//! `EMAILVERIFY_EVENTS_NATS_URL`, every event lands in the stream once, in feed order, with
//! `Nats-Msg-Id` = its cursor — across a kill -9 of the publishing replica and a restart
//! of NATS, while sign-ups go on (they never wait for NATS). Against a real `nats-server`
//! with JetStream of the test's own (random loopback port, its own store directory), so
//! the test can restart it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use base64::Engine;
use emailverify::domain::Keyring;
use emailverify::grpc::pb;
use emailverify::grpc::pb::email_verification_client::EmailVerificationClient;
use prost::Message;
use sea_orm::ConnectionTrait;
use tonic::transport::Channel;

use crate::connections::which;
use crate::helpers::process::serve;
use crate::helpers::{Backend, SmtpSink, free_port, fresh_database, poll_until};

/// A `nats-server -js` on `port`, storing in `dir` (killed when dropped).
async fn nats_server(bin: &Path, port: u16, dir: &Path) -> tokio::process::Child {
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

/// Sign-ups of users `range`, 16 at a time, all answered OK.
async fn sign_ups(grpc: &EmailVerificationClient<Channel>, range: std::ops::Range<usize>) {
    use futures::StreamExt;
    futures::stream::iter(range)
        .map(|i| {
            let mut grpc = grpc.clone();
            async move {
                grpc.request_verification(crate::helpers::sign_up(i))
                    .await
                    .expect("sign-up accepted")
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// The events table's cursors, in feed order.
async fn table_cursors(db: &sea_orm::DatabaseConnection) -> Vec<String> {
    db.query_all_raw(sea_orm::Statement::from_string(
        sea_orm::DbBackend::Postgres,
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
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("f1:{tx}:{id}"))
    })
    .collect()
}

/// Every message of the stream, in stream order: (Nats-Msg-Id, subject, payload's cursor).
async fn stream_messages(url: &str) -> Vec<(String, String, String)> {
    let Ok(client) = async_nats::connect(url).await else {
        return Vec::new();
    };
    let js = jetstream::new(client);
    let Ok(mut stream) = js.get_stream(emailverify::publish::STREAM).await else {
        return Vec::new();
    };
    let last = stream
        .info()
        .await
        .map(|i| i.state.last_sequence)
        .unwrap_or(0);
    let mut out = Vec::new();
    for seq in 1..=last {
        let msg = stream.get_raw_message(seq).await.unwrap();
        let id = msg.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned();
        let body = pb::WatchEventsResponse::decode(msg.payload).unwrap();
        out.push((id, msg.subject.to_string(), body.cursor));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_in_order_across_a_kill_9_and_a_nats_restart() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let bin: PathBuf = match which("nats-server") {
        Some(bin) => bin,
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("nats-server is not installed (apt-get install nats-server)")
        }
        None => {
            eprintln!(
                "SKIPPED every_event_once_in_order_across_a_kill_9_and_a_nats_restart: no nats-server"
            );
            return;
        }
    };
    let (port, store) = (free_port(), tempfile::tempdir().unwrap());
    let url = format!("nats://127.0.0.1:{port}");
    let nats = nats_server(&bin, port, store.path()).await;

    let db = fresh_database(Backend::Postgres).await;
    let smtp = SmtpSink::start().await;
    let key = Keyring::generate_key_base64();
    let env = [
        ("EMAILVERIFY_EVENTS_NATS_URL", url.as_str()),
        ("EMAILVERIFY_DB_POOL", "4"),
    ];
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();

    // The first process publishes (it started first, so it leads).
    let a = serve(&db.url, &smtp, &key, &env).await;
    sign_ups(&a.grpc, 0..100).await;
    let published = poll_until(Duration::from_secs(20), async || {
        (stream_messages(&url).await.len() >= 100).then_some(())
    })
    .await;
    assert!(published.is_some(), "the first hundred were not published");

    // A second process; then kill -9 of the publisher in the middle of things.
    let b = serve(&db.url, &smtp, &key, &env).await;
    sign_ups(&b.grpc, 100..200).await;
    a.kill().await;
    sign_ups(&b.grpc, 200..300).await;

    // NATS goes away: sign-ups go on, as fast as ever (they never wait for it).
    drop(nats);
    let started = Instant::now();
    sign_ups(&b.grpc, 300..400).await;
    let while_down = started.elapsed();
    let _nats = nats_server(&bin, port, store.path()).await;
    let started = Instant::now();
    sign_ups(&b.grpc, 400..500).await;
    let while_up = started.elapsed();

    // Every event of the table in the stream, once, in the table's feed order.
    let mut last = (Vec::new(), Vec::new());
    let same = poll_until(Duration::from_secs(60), async || {
        let table = table_cursors(&conn).await;
        let stream = stream_messages(&url).await;
        let ids: Vec<String> = stream.iter().map(|(id, _, _)| id.clone()).collect();
        let done = ids == table && table.len() >= 500;
        last = (table, ids);
        done.then_some(())
    })
    .await;
    let (table, ids) = last;
    eprintln!(
        "{} events in the table, {} messages in the stream; 100 sign-ups took {while_down:?} while NATS was down, {while_up:?} after it was back",
        table.len(),
        ids.len()
    );
    assert!(
        same.is_some(),
        "the stream is not the table: {} vs {} (first difference at {:?})",
        ids.len(),
        table.len(),
        ids.iter().zip(&table).position(|(a, b)| a != b)
    );
    for (id, subject, cursor) in stream_messages(&url).await {
        assert_eq!(id, cursor, "the header is the payload's cursor");
        assert!(subject.starts_with("emailverify.events."), "{subject}");
    }
    b.terminate().await;
}
