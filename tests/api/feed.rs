//! WatchEvents (API.md, "The change feed"): every event once, in one order all watchers
//! share, resumable by cursor — also while three processes write at once.

use std::time::{Duration, Instant};

use emailverify::grpc::pb;
use emailverify::grpc::pb::email_verification_client::EmailVerificationClient;
use sea_orm::ConnectionTrait;
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::process::{Replicas, replicas};
use crate::helpers::{Backend, TestApp, assert_reason, sign_ups, spawn_app_with};

fn watch_request(after: &str, types: &[&str], from_beginning: bool) -> pb::WatchEventsRequest {
    pb::WatchEventsRequest {
        after: after.into(),
        types: types.iter().map(|t| t.to_string()).collect(),
        from_beginning,
    }
}

/// Reads from a watch until `n` events arrived or `wait` passed.
async fn take(
    stream: &mut tonic::Streaming<pb::WatchEventsResponse>,
    n: usize,
    wait: Duration,
) -> Vec<pb::WatchEventsResponse> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(item))) => got.push(item),
            _ => break,
        }
    }
    got
}

async fn watch(
    grpc: &EmailVerificationClient<Channel>,
    req: pb::WatchEventsRequest,
) -> Result<tonic::Streaming<pb::WatchEventsResponse>, tonic::Status> {
    grpc.clone().watch_events(req).await.map(|r| r.into_inner())
}

/// The events table in feed order: (user id, type).
async fn table(db: &sea_orm::DatabaseConnection) -> Vec<(String, String)> {
    let order = match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => "feed_tx, event_id",
        _ => "event_id",
    };
    db.query_all_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        format!("SELECT user_id, event_type FROM events ORDER BY {order}"),
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.try_get("", "user_id").unwrap(),
            r.try_get("", "event_type").unwrap(),
        )
    })
    .collect()
}

fn pairs(items: &[pb::WatchEventsResponse]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|i| (i.user_id.clone(), i.event.clone().unwrap().r#type))
        .collect()
}

async fn app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| s.retention_every = "100ms".into()).await
}

async fn the_feed_replays_filters_resumes_and_follows(backend: Backend) {
    let app = app(backend).await;
    app.verified_user("user-1", "jane@example.com").await;
    app.verified_user("user-2", "ram@example.com").await;
    app.eventually_count("events WHERE event_type = 'mail_sent'", 2)
        .await;
    let all = table(&app.db).await;

    // From the beginning: every event, in the table's feed order.
    let mut s = watch(&app.grpc, watch_request("", &[], true))
        .await
        .unwrap();
    let got = take(&mut s, all.len(), Duration::from_secs(5)).await;
    assert_eq!(pairs(&got), all);
    assert!(
        got.iter()
            .all(|g| !g.event.as_ref().unwrap().masked_address.contains("jane@"))
    );

    // Resuming after the second event gives the rest, exactly.
    let mut s = watch(&app.grpc, watch_request(&got[1].cursor, &[], false))
        .await
        .unwrap();
    let rest = take(&mut s, all.len() - 2, Duration::from_secs(5)).await;
    assert_eq!(pairs(&rest), all[2..].to_vec());

    // A filter by type.
    let mut s = watch(&app.grpc, watch_request("", &["email_verified"], true))
        .await
        .unwrap();
    let verified = take(&mut s, 2, Duration::from_secs(5)).await;
    assert_eq!(
        pairs(&verified),
        vec![
            ("user-1".to_string(), "email_verified".to_string()),
            ("user-2".to_string(), "email_verified".to_string())
        ]
    );

    // Live: a watcher from now on sees only what comes after, soon after its commit.
    let mut live = watch(&app.grpc, watch_request("", &[], false))
        .await
        .unwrap();
    let asked = Instant::now();
    app.request_verification("user-3", "sita@example.com")
        .await
        .unwrap();
    let first = take(&mut live, 1, Duration::from_secs(5)).await;
    let latency = asked.elapsed();
    assert_eq!(
        pairs(&first),
        vec![("user-3".into(), "verification_requested".into())]
    );
    // The contract's bound: within 1 s (the feed is polled every 200 ms).
    assert!(latency < Duration::from_secs(1), "{latency:?}");

    // A malformed cursor.
    let err = watch(&app.grpc, watch_request("not-a-cursor", &[], false))
        .await
        .unwrap_err();
    assert_reason(&err, Code::InvalidArgument, "INVALID_CURSOR");

    // Retention removes the oldest events: a cursor from before them has missed some.
    let old_cursor = got[0].cursor.clone();
    app.clock.advance(Duration::from_secs(401 * 24 * 3600));
    app.request_verification("user-4", "hari@example.com")
        .await
        .unwrap();
    app.eventually_count("events WHERE user_id <> 'user-4'", 0)
        .await;
    let err = watch(&app.grpc, watch_request(&old_cursor, &[], false))
        .await
        .unwrap_err();
    assert_reason(&err, Code::FailedPrecondition, "CURSOR_EXPIRED");
}

crate::on_both_backends!(the_feed_replays_filters_resumes_and_follows);

/// Three processes write one PostgreSQL at once; one watcher stays connected to one of
/// them, another disconnects three times and resumes by cursor on another: both see every
/// event of the table exactly once, in the table's feed order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_is_gap_free_while_three_processes_write() {
    const SIGN_UPS: usize = 1100;
    let env = [
        ("EMAILVERIFY_LIMIT_PER_USER", "100/1h"),
        ("EMAILVERIFY_DB_POOL", "8"),
    ];
    let Some(Replicas {
        db,
        smtp,
        served: [a, b, c],
    }) = replicas(&env).await
    else {
        return;
    };

    let steady = tokio::spawn({
        let grpc = a.grpc.clone();
        async move {
            let mut s = watch(&grpc, watch_request("", &[], true)).await.unwrap();
            let mut got = Vec::new();
            while let Ok(Ok(Some(item))) =
                tokio::time::timeout(Duration::from_secs(10), s.message()).await
            {
                got.push(item);
            }
            got
        }
    });
    let resuming = tokio::spawn({
        let grpc = b.grpc.clone();
        async move {
            let mut got: Vec<pb::WatchEventsResponse> = Vec::new();
            // Three short connections, each resuming from the last cursor, then one to the end.
            for round in 0..4 {
                let after = got.last().map(|g| g.cursor.clone()).unwrap_or_default();
                let mut s = watch(&grpc, watch_request(&after, &[], after.is_empty()))
                    .await
                    .unwrap();
                let (wait, most) = if round < 3 {
                    (Duration::from_secs(3), 500)
                } else {
                    (Duration::from_secs(10), usize::MAX)
                };
                let started = Instant::now();
                let mut n = 0;
                while n < most && started.elapsed() < wait + Duration::from_secs(60) {
                    match tokio::time::timeout(wait, s.message()).await {
                        Ok(Ok(Some(item))) => {
                            got.push(item);
                            n += 1;
                        }
                        _ => break,
                    }
                }
            }
            got
        }
    });

    // 64 at once: sign-ups spread over the three processes, then every link confirmed.
    let clients = [a.grpc.clone(), b.grpc.clone(), c.grpc.clone()];
    sign_ups(&clients, SIGN_UPS, 64).await;
    let mut inbox = crate::helpers::Inbox::default();
    smtp.receive(&mut inbox, SIGN_UPS, &db.url).await;
    // The links point at whichever process took the request: read the token alone.
    let tokens: Vec<String> = inbox
        .mails
        .iter()
        .map(|m| {
            let (_, rest) = m.text.split_once("/verify?token=").expect("a link");
            rest.chars().take(43).collect()
        })
        .collect();
    {
        use futures::StreamExt;
        futures::stream::iter(tokens.into_iter().enumerate())
            .map(|(i, token)| {
                let mut grpc = clients[i % 3].clone();
                async move {
                    grpc.confirm_link(pb::ConfirmLinkRequest { token })
                        .await
                        .expect("confirmed")
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
    }

    let (steady, resuming) = (steady.await.unwrap(), resuming.await.unwrap());
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let all = table(&conn).await;
    eprintln!(
        "{} events in the table; the steady watcher saw {}, the resuming one {}",
        all.len(),
        steady.len(),
        resuming.len()
    );
    assert!(all.len() >= 3000, "{} events", all.len());
    assert_eq!(
        pairs(&steady),
        all,
        "the steady watcher saw the table, in order"
    );
    assert_eq!(
        pairs(&resuming),
        all,
        "the resuming watcher saw the table, in order"
    );
    for p in [a, b, c] {
        p.terminate().await;
    }
}

/// Watchers that never read cost the server a bounded amount: 50,000 events waiting, eight
/// watchers from the beginning that read nothing, and the service's RSS grows by less than
/// 16 MiB (unbounded buffering would hold every event once per watcher: ~100 MB). Then a
/// reader still gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_that_never_read_do_not_grow_the_server() {
    const EVENTS: usize = 50_000;
    let Some(Replicas {
        db, served: [a], ..
    }) = replicas(&[("EMAILVERIFY_DB_POOL", "4")]).await
    else {
        return;
    };
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    conn.execute_unprepared(&format!(
        "INSERT INTO events (user_id, flow_id, event_type, masked_address, detail, at, actor, request_id, repeats) \
         SELECT 'user-' || i, NULL, 'email_verified', 'j***@example.com', 'a detail of some length to make rows weigh', 1000, 'api', '', 1 \
         FROM generate_series(1, {EVENTS}) AS i"
    ))
    .await
    .unwrap();
    let before = a.rss_kib();
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(watch(&a.grpc, watch_request("", &[], true)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = a.rss_kib();
    eprintln!("RSS with 8 idle watchers over {EVENTS} events: {before} KiB → {after} KiB");
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    // A connection of its own: the idle watchers' unread data holds their connection's
    // HTTP/2 window, not anyone else's.
    let own = EmailVerificationClient::connect(format!("http://{}", a.grpc_addr))
        .await
        .unwrap();
    let mut reader = watch(&own, watch_request("", &[], true)).await.unwrap();
    let all = take(&mut reader, EVENTS, Duration::from_secs(60)).await;
    assert_eq!(all.len(), EVENTS);
    drop(idle);
    a.terminate().await;
}
