//! The locked path on PostgreSQL (`EMAILVERIFY_OPTIMISTIC=off`, and every hot use-case's
//! last try): a link confirmation reads its token and flow before it takes the user's
//! lock, so whatever changed while it waited for the lock is read again under it. The
//! test holds the user's lock itself, as a concurrent use-case would, changes the rows,
//! and lets go; the interleaving is exact (the confirmation is seen waiting first).
//! PostgreSQL only: SQLite's one connection lets nothing in between.

use std::time::Duration;

use emailverify::grpc::pb;
use sea_orm::{ConnectionTrait, DatabaseTransaction, TransactionTrait};
use tonic::Code;

use crate::helpers::process::{command, run_ok};
use crate::helpers::{
    Backend, SmtpSink, TestApp, assert_reason, expect_err, fresh_database, postgres_available,
    spawn_app_with, start, test_settings,
};

async fn locked_app() -> Option<TestApp> {
    if !postgres_available().await {
        return None;
    }
    Some(spawn_app_with(Backend::Postgres, |s| s.optimistic = "off".into()).await)
}

/// Takes `user`'s lock the way every locking use-case does (bumping its version).
async fn hold_lock(app: &TestApp, user: &str) -> DatabaseTransaction {
    let holder = app.db.begin().await.unwrap();
    let taken = holder
        .execute_unprepared(&format!(
            "UPDATE users SET version = emailverify_next_version() WHERE user_id = '{user}'"
        ))
        .await
        .unwrap();
    assert_eq!(taken.rows_affected(), 1);
    holder
}

/// Waits (bounded) until a statement of the service waits for a lock.
async fn until_someone_waits_for_a_lock(app: &TestApp) {
    let sql = "pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    for _ in 0..500 {
        if app.count(sql).await > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no statement came to wait for the user's lock within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_superseded_while_its_confirmation_waited_for_the_lock_is_token_superseded() {
    let Some(app) = locked_app().await else {
        return;
    };
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);

    let holder = hold_lock(&app, "user-1").await;
    let (answer, ()) = tokio::join!(app.confirm(&token), async {
        until_someone_waits_for_a_lock(&app).await;
        // What a resend does under the lock: the link is replaced.
        holder
            .execute_unprepared(
                "UPDATE tokens SET state = 'superseded' WHERE state = 'live' \
                 AND flow_id IN (SELECT flow_id FROM flows WHERE user_id = 'user-1')",
            )
            .await
            .unwrap();
        holder.commit().await.unwrap();
    });
    // Not TOKEN_USED: the page would tell a person their address was confirmed.
    assert_reason(
        &expect_err(answer),
        Code::FailedPrecondition,
        "TOKEN_SUPERSEDED",
    );
    assert!(!app.status("user-1").await.unwrap().email_verified);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_counted_while_a_link_confirmation_waited_stay_counted() {
    let Some(app) = locked_app().await else {
        return;
    };
    app.verified_user("user-1", "old@example.com").await;
    app.request_change("user-1", "new@example.org")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);

    let holder = hold_lock(&app, "user-1").await;
    let (answer, ()) = tokio::join!(app.confirm(&token), async {
        until_someone_waits_for_a_lock(&app).await;
        // What four wrong codes do under the lock.
        holder
            .execute_unprepared(
                "UPDATE flows SET failed_codes = 4 WHERE user_id = 'user-1' \
                 AND state = 'pending'",
            )
            .await
            .unwrap();
        holder.commit().await.unwrap();
    });
    assert_eq!(answer.unwrap().outcome(), pb::Outcome::CurrentConfirmed);
    // The flow written back is the one read under the lock: one wrong code is left.
    assert_eq!(
        app.count("flows WHERE user_id = 'user-1' AND state = 'pending' AND failed_codes = 4")
            .await,
        1,
        "the confirmation wrote back the flow it read before the lock"
    );
    let right = app.next_mail().await.code();
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_reason(
        &expect_err(app.confirm_code("user-1", wrong).await),
        Code::ResourceExhausted,
        "LOCKED_OUT",
    );
}

/// `outbox retry-dead` checks that a dead link mail's flow is pending, then takes the
/// user's lock to give it a fresh link: a flow cancelled meanwhile stays cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_dead_leaves_a_flow_cancelled_while_it_waited_for_the_lock_alone() {
    if !postgres_available().await {
        return;
    }
    let db = fresh_database(Backend::Postgres).await;
    let smtp = SmtpSink::start().await;
    let settings = test_settings(&db, &smtp);
    let key = settings.token_keys.clone().unwrap();
    let app = start(db, smtp.clone(), settings, Default::default()).await;
    smtp.reply_next(&["550 5.7.1 rejected"]);
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    app.eventually_count("outbox WHERE state = 'dead'", 1).await;

    let holder = hold_lock(&app, "user-1").await;
    let mut retry = command(&["outbox", "retry-dead"]);
    retry
        .env("DATABASE_URL", &app.db_url)
        .env("EMAILVERIFY_TOKEN_KEYS", &key)
        .env("EMAILVERIFY_PUBLIC_URL", &app.http_base);
    let (ran, ()) = tokio::join!(run_ok(&mut retry), async {
        until_someone_waits_for_a_lock(&app).await;
        // What CancelChange / "this wasn't me" do under the lock.
        holder
            .execute_unprepared(
                "UPDATE flows SET state = 'cancelled' WHERE user_id = 'user-1' \
                 AND state = 'pending'",
            )
            .await
            .unwrap();
        holder.commit().await.unwrap();
    });
    assert!(
        ran.stdout.contains("sent 0 fresh link(s), left 1 dead"),
        "{}",
        ran.stdout
    );
    assert_eq!(app.count("flows WHERE state = 'pending'").await, 0);
    app.assert_no_mail().await;
}
