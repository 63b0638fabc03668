//! The fault beside a failover: PostgreSQL refusing new connections (`max_connections`
//! reached, SQLSTATE 53300) is back-pressure, not an error.

use std::time::Instant;

use sea_orm::{ConnectionTrait, Database};

use crate::helpers::postgres::{PrivatePostgres, skip_postgres_case};
use crate::helpers::{TestDb, sign_up, start, test_settings};

/// SQLSTATE 53300 as back-pressure: a server with 17 connection slots (two held by another
/// program), a service asked for a pool of 32, 2,000 sign-ups 64 at a time: the pool is
/// sized to the server's room and every sign-up waits for a pooled connection instead of
/// failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_few_connection_slots_makes_requests_wait_not_fail() {
    let pg = match tokio::task::spawn_blocking(|| {
        PrivatePostgres::start_with(&[], "-c max_connections=17")
    })
    .await
    .unwrap()
    {
        Ok(pg) => pg,
        Err(why) => return skip_postgres_case(&format!("no private PostgreSQL: {why}")),
    };
    let other = {
        let mut opts = sea_orm::ConnectOptions::new(pg.url());
        opts.max_connections(2).min_connections(2);
        Database::connect(opts).await.unwrap()
    };
    other.execute_unprepared("SELECT 1").await.unwrap();
    let smtp = crate::helpers::SmtpSink::start().await;
    let mut settings = test_settings(&TestDb::at(pg.url()), &smtp);
    settings.db_pool = "32".into();
    let app = start(TestDb::at(pg.url()), smtp, settings, Default::default()).await;

    use futures::StreamExt;
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..2000)
        .map(|i| {
            let mut grpc = app.grpc.clone();
            async move { grpc.request_verification(sign_up(i)).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.as_ref()
                .err()
                .map(|s| format!("{:?} {}", s.code(), s.message()))
        })
        .collect();
    eprintln!(
        "53300 FIGURES: 2000 sign-ups at c=64 against max_connections=17: {} failed, {:.1} s",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} of 2000 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    other.close().await.unwrap();
}
