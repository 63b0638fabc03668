//! The change feed on NATS JetStream (API.md, "The change feed"): with
//! `EMAILVERIFY_EVENTS_NATS_URL`, every event lands in the stream once, in feed order, with
//! `Nats-Msg-Id` = its cursor — across a kill -9 of the publishing replica and a restart
//! of NATS, while sign-ups go on (they never wait for NATS). Against a real `nats-server`
//! with JetStream of the test's own (random loopback port, its own store directory), so
//! the test can restart it.

use std::time::{Duration, Instant};

use emailverify::domain::Keyring;
use emailverify::grpc::pb::email_verification_client::EmailVerificationClient;
use tonic::transport::Channel;

use crate::helpers::nats::{server as nats_server, stream_messages, table_cursors};
use crate::helpers::process::serve;
use crate::helpers::{Backend, SmtpSink, free_port, fresh_database, poll_until};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_in_order_across_a_kill_9_and_a_nats_restart() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let Some(bin) = crate::helpers::nats::binary(
        "every_event_once_in_order_across_a_kill_9_and_a_nats_restart",
    ) else {
        return;
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
        let ids: Vec<String> = stream.iter().map(|m| m.id.clone()).collect();
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
    for m in stream_messages(&url).await {
        assert_eq!(m.id, m.event.cursor, "the header is the payload's cursor");
        assert!(
            m.subject.starts_with("emailverify.events."),
            "{}",
            m.subject
        );
    }
    b.terminate().await;
}
