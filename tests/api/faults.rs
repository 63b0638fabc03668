//! Delivery under process faults, with real `emailverify serve` processes: a kill -9 in the
//! middle of a drain, and three processes sharing one outbox on PostgreSQL.

use std::collections::HashMap;
use std::time::Duration;

use emailverify::grpc::pb;

use crate::helpers::{Backend, SmtpSink, fresh_database};
use crate::process::serve;

/// Sends `n` sign-ups spread over the given processes, `concurrency` at a time.
async fn sign_ups(procs: &[&crate::process::Served], n: usize, concurrency: usize) {
    use futures::StreamExt;
    let clients: Vec<_> = procs.iter().map(|p| p.grpc.clone()).collect();
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let mut grpc = clients[i % clients.len()].clone();
            async move {
                grpc.request_verification(pb::RequestVerificationRequest {
                    user_id: format!("user-{i}"),
                    email: format!("u{i}@example.com"),
                    locale: String::new(),
                })
                .await
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for r in results {
        r.expect("sign-up accepted");
    }
}

/// `receive`, and on failure a picture of the outbox.
async fn receive_or_explain(
    smtp: &SmtpSink,
    distinct: usize,
    counts: &mut HashMap<String, u32>,
    db_url: &str,
) {
    use sea_orm::{ConnectionTrait, Statement};
    while counts.len() < distinct {
        match smtp.next_within(Duration::from_secs(60)).await {
            Some(mail) => *counts.entry(mail.message_id).or_default() += 1,
            None => {
                let conn = sea_orm::Database::connect(db_url).await.unwrap();
                let rows = conn
                    .query_all_raw(Statement::from_string(
                        conn.get_database_backend(),
                        "SELECT state, attempts, claimed_by IS NULL AS unclaimed, last_error, COUNT(*) AS n FROM outbox GROUP BY state, attempts, claimed_by IS NULL, last_error".to_string(),
                    ))
                    .await
                    .unwrap();
                let picture: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        format!(
                            "{} attempts={} unclaimed={:?} err={:?} n={}",
                            r.try_get::<String>("", "state").unwrap(),
                            r.try_get::<i32>("", "attempts").unwrap(),
                            r.try_get::<bool>("", "unclaimed").ok(),
                            r.try_get::<Option<String>>("", "last_error").unwrap(),
                            r.try_get::<i64>("", "n").unwrap()
                        )
                    })
                    .collect();
                panic!(
                    "only {} of {distinct} distinct mails arrived; outbox: {picture:#?}",
                    counts.len()
                );
            }
        }
    }
    while let Some(mail) = smtp.next_within(Duration::from_secs(2)).await {
        *counts.entry(mail.message_id).or_default() += 1;
    }
}

/// Receives until `distinct` different Message-IDs arrived (and a quiet moment after),
/// returning how often each arrived.
async fn receive(smtp: &SmtpSink, distinct: usize, counts: &mut HashMap<String, u32>) {
    while counts.len() < distinct {
        let mail = smtp
            .next_within(Duration::from_secs(60))
            .await
            .unwrap_or_else(|| {
                panic!("only {} of {distinct} distinct mails arrived", counts.len())
            });
        *counts.entry(mail.message_id).or_default() += 1;
    }
    while let Some(mail) = smtp.next_within(Duration::from_secs(2)).await {
        *counts.entry(mail.message_id).or_default() += 1;
    }
}

const DRAIN: usize = 500;

async fn a_kill_9_in_the_middle_of_a_drain_loses_nothing(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let key = emailverify::domain::Keyring::generate_key_base64();
    let env = [
        ("EMAILVERIFY_MAIL_LEASE", "2s"),
        ("EMAILVERIFY_MAIL_RETRY_BASE", "200ms"),
    ];
    smtp.down();
    let first = serve(&db.url, &smtp, &key, &env).await;
    sign_ups(&[&first], DRAIN, 16).await;

    // Let the drain start, then kill the process without warning.
    smtp.up();
    let mut counts = HashMap::new();
    while counts.len() < DRAIN / 5 {
        let mail = smtp
            .next_within(Duration::from_secs(60))
            .await
            .expect("the drain runs");
        *counts.entry(mail.message_id).or_default() += 1;
    }
    let mut child = first.child;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let before_kill = counts.len();

    let second = serve(&db.url, &smtp, &key, &env).await;
    receive_or_explain(&smtp, DRAIN, &mut counts, &db.url).await;
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 after {before_kill} of {DRAIN} mails: all {} arrived, {duplicates} duplicate(s)",
        counts.len()
    );
    assert_eq!(counts.len(), DRAIN, "every committed sign-up got its mail");
    // One worker sends one mail at a time: at most that one was in flight at the kill.
    assert!(duplicates <= 1, "{duplicates} duplicates");
    assert!(second.terminate().await.0.success());
}

crate::on_both_backends!(a_kill_9_in_the_middle_of_a_drain_loses_nothing);

const SPREAD: usize = 1000;

/// Three processes on one PostgreSQL share the outbox: every mail goes out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_postgres_send_a_thousand_distinct_mails() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let db = fresh_database(Backend::Postgres).await;
    let smtp = SmtpSink::start().await;
    let key = emailverify::domain::Keyring::generate_key_base64();
    let env = [("EMAILVERIFY_LIMIT_PER_USER", "100/1h")];
    let a = serve(&db.url, &smtp, &key, &env).await;
    let b = serve(&db.url, &smtp, &key, &env).await;
    let c = serve(&db.url, &smtp, &key, &env).await;

    sign_ups(&[&a, &b, &c], SPREAD, 24).await;
    let mut counts = HashMap::new();
    receive(&smtp, SPREAD, &mut counts).await;

    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "3 processes, {SPREAD} sign-ups: {} distinct mails, {duplicates} duplicate(s)",
        counts.len()
    );
    assert_eq!(counts.len(), SPREAD);
    assert_eq!(duplicates, 0, "a mail went out twice");
    for p in [a, b, c] {
        assert!(p.terminate().await.0.success());
    }
}
