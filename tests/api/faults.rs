//! Delivery under process faults, with real `emailverify serve` processes: a kill -9 in the
//! middle of a drain, three processes sharing one outbox on PostgreSQL, and PostgreSQL
//! restarted under load.

use std::time::Duration;

use emailverify::domain::Keyring;

use crate::helpers::postgres::{PrivatePostgres, skip_postgres_case};
use crate::helpers::process::{Replicas, replicas, serve};
use crate::helpers::{Backend, Inbox, SmtpSink, eventually, fresh_database, sign_up, sign_ups};

const DRAIN: usize = 500;

async fn a_kill_9_in_the_middle_of_a_drain_loses_nothing(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let key = Keyring::generate_key_base64();
    let env = [
        ("EMAILVERIFY_MAIL_LEASE", "2s"),
        ("EMAILVERIFY_MAIL_RETRY_BASE", "200ms"),
    ];
    smtp.down();
    let first = serve(&db.url, &smtp, &key, &env).await;
    sign_ups(std::slice::from_ref(&first.grpc), DRAIN, 16).await;

    // Let the drain start, then kill the process without warning.
    smtp.up();
    let mut inbox = Inbox::default();
    smtp.receive(&mut inbox, DRAIN / 5, &db.url).await;
    first.kill().await;
    let before_kill = inbox.mails.len();

    let second = serve(&db.url, &smtp, &key, &env).await;
    smtp.receive(&mut inbox, DRAIN, &db.url).await;
    smtp.receive_stragglers(&mut inbox).await;
    let duplicates = inbox.duplicates();
    eprintln!(
        "kill -9 after {before_kill} of {DRAIN} mails: all {} arrived, {duplicates} duplicate(s)",
        inbox.mails.len()
    );
    assert_eq!(
        inbox.mails.len(),
        DRAIN,
        "every committed sign-up got its mail"
    );
    // Only mails handed to SMTP and not yet marked sent at the kill can go twice: at
    // most the sends under way at once.
    let bound = emailverify::mail::outbox::UNMARKED_AT_MOST as u32;
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates, more than the {bound} sends that can be under way"
    );
    assert!(second.terminate().await.0.success());
}

crate::on_both_backends!(a_kill_9_in_the_middle_of_a_drain_loses_nothing);

const SPREAD: usize = 1000;

/// Three processes on one PostgreSQL share the outbox: every mail goes out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_postgres_send_a_thousand_distinct_mails() {
    // Three pools on one server: kept small so that, with the other tests' databases on
    // the same server, they stay well inside its max_connections (100 by default).
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

    sign_ups(
        &[a.grpc.clone(), b.grpc.clone(), c.grpc.clone()],
        SPREAD,
        24,
    )
    .await;
    let mut inbox = Inbox::default();
    smtp.receive(&mut inbox, SPREAD, &db.url).await;
    smtp.receive_stragglers(&mut inbox).await;

    let duplicates = inbox.duplicates();
    eprintln!(
        "3 processes, {SPREAD} sign-ups: {} distinct mails, {duplicates} duplicate(s)",
        inbox.mails.len()
    );
    assert_eq!(inbox.mails.len(), SPREAD);
    assert_eq!(duplicates, 0, "a mail went out twice");
    for p in [a, b, c] {
        assert!(p.terminate().await.0.success());
    }
}

/// PostgreSQL restarted under load: RPCs fail only with UNAVAILABLE (safe to retry), the
/// service recovers without a restart, and every sign-up that succeeded gets its mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_gives_unavailable_only_and_loses_no_mail() {
    // A server of the test's own, so that restarting it disturbs no other test.
    let pg = match tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap()
    {
        Ok(pg) => pg,
        Err(why) => return skip_postgres_case(&format!("no private PostgreSQL: {why}")),
    };
    let smtp = SmtpSink::start().await;
    let db = crate::helpers::TestDb::at(pg.url());
    let mut settings = crate::helpers::test_settings(&db, &smtp);
    settings.limit_per_user = "1000/1h".into();
    let app = crate::helpers::start(db, smtp.clone(), settings, Default::default()).await;

    let load = {
        let grpc = app.grpc.clone();
        tokio::spawn(async move {
            let (mut ok, mut unavailable, mut other) = (0u32, 0u32, Vec::new());
            let started = std::time::Instant::now();
            let mut i = 0;
            while started.elapsed() < Duration::from_secs(6) {
                let batch = (0..8).map(|k| {
                    let mut g = grpc.clone();
                    async move { g.request_verification(sign_up(i + k)).await }
                });
                for r in futures::future::join_all(batch).await {
                    match r {
                        Ok(_) => ok += 1,
                        Err(s) if s.code() == tonic::Code::Unavailable => unavailable += 1,
                        Err(s) => other.push(format!("{:?}: {}", s.code(), s.message())),
                    }
                }
                i += 8;
            }
            (ok, unavailable, other)
        })
    };
    // Let the load run a while before the restart.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarted = tokio::task::block_in_place(|| pg.ctl("restart"));
    assert_eq!(restarted, Ok(()), "PostgreSQL restarted");
    let (ok, unavailable, other) = load.await.unwrap();
    eprintln!(
        "PostgreSQL restart under load: {ok} sign-ups OK, {unavailable} UNAVAILABLE, {} other",
        other.len()
    );
    assert!(other.is_empty(), "errors other than UNAVAILABLE: {other:?}");
    assert!(ok > 0);

    // Recovered without restarting the service: a new request works (a repeat returns the
    // same flow and sends no second mail), and every OK sign-up's mail arrives.
    let after = eventually(
        "the service recovers without a restart",
        Duration::from_secs(10),
        async || {
            app.request_verification("after-restart", "after@example.com")
                .await
                .ok()
        },
    )
    .await;
    assert!(!after.flow_id.is_empty());
    let mut inbox = Inbox::default();
    smtp.receive(&mut inbox, ok as usize + 1, &pg.url()).await;
    smtp.receive_stragglers(&mut inbox).await;
    // A request answered UNAVAILABLE may still have committed (its COMMIT reached the server
    // but the answer was lost in the restart): its mail then goes out too. That is why
    // UNAVAILABLE is "safe to retry": a retry returns the same flow and sends no second mail.
    let delivered = inbox.mails.len();
    assert!(
        delivered > ok as usize && delivered <= (ok + 1 + unavailable) as usize,
        "{delivered} mails for {ok} accepted (+1) and {unavailable} unavailable sign-ups"
    );
    assert_eq!(app.get("/readyz").await.status(), 200);
}
