//! Retention (API.md, "Erasure and retention"): with the clock moved on, old sent mails,
//! tokens that can no longer be used, drained rate-limit buckets and old events and ended
//! flows go; young ones stay.
//! Two processes pruning one PostgreSQL at once delete each row once.

use std::time::Duration;

use sea_orm::ConnectionTrait;

use crate::helpers::process::{Replicas, replicas};
use crate::helpers::{Backend, TestApp, poll_until, spawn_app_with};

const DAY: Duration = Duration::from_secs(24 * 3600);

async fn app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| s.retention_every = "100ms".into()).await
}

async fn old_rows_go_and_young_ones_stay(backend: Backend) {
    let app = app(backend).await;
    // Day 0: a finished sign-up (mail sent, token used) and a pending one.
    app.verified_user("user-1", "done@example.com").await;
    app.request_verification("user-2", "waiting@example.com")
        .await
        .unwrap();
    app.next_mail().await;
    app.eventually_count("outbox WHERE state = 'sent'", 2).await;
    let events_day0 = app.count("events").await;

    // Day 9: mails and tokens of day 0 are past the 7 days; a new sign-up is young.
    app.clock.advance(9 * DAY);
    app.request_verification("user-3", "young@example.com")
        .await
        .unwrap();
    app.next_mail().await;
    app.eventually_count("outbox", 1).await;
    app.eventually_count("tokens", 1).await;
    // Rate-limit buckets that have drained go (erasure keeps buckets, so this is what
    // bounds the table); user-3's request and its inbox's link mail are still counted.
    app.eventually_count("rate_limits", 2).await;
    assert_eq!(
        app.count("tokens WHERE state = 'live'").await,
        1,
        "user-3's link stays"
    );
    assert!(
        app.count("events").await > events_day0,
        "events stay for 400 days"
    );
    assert_eq!(app.count("flows").await, 3, "flows stay for 400 days");

    // Day 410: day 0's and day 9's events and the ended flow go; pending flows stay, and
    // so does what happens now.
    app.clock.advance(401 * DAY);
    app.request_verification("user-4", "now@example.com")
        .await
        .unwrap();
    app.next_mail().await;
    app.eventually_count("flows WHERE state <> 'pending'", 0)
        .await;
    app.eventually_count("events WHERE user_id <> 'user-4'", 0)
        .await;
    assert!(app.count("events WHERE user_id = 'user-4'").await > 0);
    assert_eq!(app.count("flows WHERE state = 'pending'").await, 3);
}

crate::on_both_backends!(old_rows_go_and_young_ones_stay);

/// The rows retention removed per table, as a process's /metrics says.
fn pruned(metrics: &str, table: &str) -> u64 {
    let series = format!("emailverify_retention_pruned_total{{table=\"{table}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_pruning_at_once_delete_each_row_once() {
    const OLD: u64 = 30_000;
    let env = [
        ("EMAILVERIFY_DB_POOL", "4"),
        ("EMAILVERIFY_RETENTION_EVERY", "50ms"),
    ];
    // Both processes run (the first migrates); then 30,000 events of 1970 arrive in one
    // commit, and both prune them at once, 1,000 rows a statement.
    let Some(Replicas {
        db, served: [a, b], ..
    }) = replicas(&env).await
    else {
        return;
    };
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    conn.execute_unprepared(&format!(
        "INSERT INTO events (user_id, flow_id, event_type, masked_address, detail, at, actor, request_id, repeats) \
         SELECT 'old-' || i, NULL, 'email_verified', '', '', 1000, 'api', '', 1 FROM generate_series(1, {OLD}) AS i"
    ))
    .await
    .unwrap();
    let gone = poll_until(Duration::from_secs(60), async || {
        let row = conn
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT COUNT(*) AS n FROM events WHERE at = 1000",
            ))
            .await
            .ok()??;
        (row.try_get::<i64>("", "n").ok()? == 0).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "the old events were not all pruned within 60 s"
    );
    let (by_a, by_b) = (
        pruned(&a.metrics().await, "events"),
        pruned(&b.metrics().await, "events"),
    );
    eprintln!("pruned: {by_a} by one process, {by_b} by the other");
    assert_eq!(by_a + by_b, OLD, "each row deleted once, and counted once");
    a.terminate().await;
    b.terminate().await;
}
