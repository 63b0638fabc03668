//! A primary fenced read-only (`default_transaction_read_only`, reloaded) while the pool's
//! sessions to it stay open, and a new primary behind the same address: the pool leaves
//! the fenced server for the new one under a steady load, although none of its
//! connections is ever idle long enough to be asked again (`store::connect`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database};
use tonic::Code;

use crate::helpers::pair::{Pair, Proxy};
use crate::helpers::postgres::skip_postgres_case;
use crate::helpers::{TestDb, sign_up, start, test_settings};

/// What the load has seen: answers by kind, and the last run of OKs.
#[derive(Default)]
struct Answers {
    ok: AtomicUsize,
    unavailable: AtomicUsize,
    other: std::sync::Mutex<Vec<String>>,
    /// OKs in a row since the last answer that was not OK.
    ok_in_a_row: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_fenced_under_open_sessions_is_left_for_the_new_one() {
    let pair = match tokio::task::spawn_blocking(Pair::start).await.unwrap() {
        Ok(pair) => pair,
        Err(why) => return skip_postgres_case(&format!("no private PostgreSQL pair: {why}")),
    };
    let admin = Database::connect(pair.primary.url()).await.unwrap();
    admin
        .execute_unprepared("CREATE DATABASE ev")
        .await
        .unwrap();
    let proxy = Proxy::start(pair.primary.port()).await;
    let smtp = crate::helpers::SmtpSink::start().await;
    let mut settings = test_settings(&TestDb::at(proxy.url("ev")), &smtp);
    settings.limit_per_user = "1000/1h".into();
    let app = start(
        TestDb::at(proxy.url("ev")),
        smtp,
        settings,
        Default::default(),
    )
    .await;

    // A steady load: 8 callers, each a sign-up after the other (at most 60 s, 200,000 calls).
    let answers = Arc::new(Answers::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (answers, stop, next) = (answers.clone(), stop.clone(), next.clone());
            let mut grpc = app.grpc.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= 200_000 {
                        break;
                    }
                    match grpc.request_verification(sign_up(i)).await {
                        Ok(_) => {
                            answers.ok.fetch_add(1, Ordering::SeqCst);
                            answers.ok_in_a_row.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(s) if s.code() == Code::Unavailable => {
                            answers.unavailable.fetch_add(1, Ordering::SeqCst);
                            answers.ok_in_a_row.store(0, Ordering::SeqCst);
                        }
                        Err(s) => {
                            answers.ok_in_a_row.store(0, Ordering::SeqCst);
                            answers.other.lock().unwrap().push(format!(
                                "{:?} {}",
                                s.code(),
                                s.message()
                            ));
                        }
                    }
                }
            })
        })
        .collect();
    let wait_for = |what: &'static str, limit: Duration, done: Box<dyn Fn() -> bool + Send>| async move {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < limit, "{what} within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    };
    let a = answers.clone();
    wait_for(
        "200 sign-ups OK",
        Duration::from_secs(20),
        Box::new(move || a.ok.load(Ordering::SeqCst) >= 200),
    )
    .await;

    // Fenced: the primary's open sessions refuse writes from their next statement on.
    for sql in [
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "SELECT pg_reload_conf()",
    ] {
        admin.execute_unprepared(sql).await.unwrap();
    }
    let a = answers.clone();
    wait_for(
        "a sign-up refused as UNAVAILABLE",
        Duration::from_secs(10),
        Box::new(move || a.unavailable.load(Ordering::SeqCst) > 0),
    )
    .await;

    // The standby takes over; the address now leads to it, and the sessions to the fenced
    // server stay open.
    tokio::task::block_in_place(|| pair.standby.promote()).unwrap();
    proxy.repoint_keeping_sessions(pair.standby.port());
    let a = answers.clone();
    let healed = wait_for(
        "500 sign-ups OK in a row on the new primary",
        Duration::from_secs(20),
        Box::new(move || a.ok_in_a_row.load(Ordering::SeqCst) >= 500),
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    eprintln!(
        "FENCED FIGURES: {} sign-ups OK, {} UNAVAILABLE, 500 OK in a row {:.1} s after the new primary took over",
        answers.ok.load(Ordering::SeqCst),
        answers.unavailable.load(Ordering::SeqCst),
        healed.as_secs_f64()
    );
    let other = answers.other.lock().unwrap().clone();
    assert!(
        other.is_empty(),
        "answers other than OK/UNAVAILABLE: {other:?}"
    );
    admin.close().await.unwrap();
}
