//! The locked path on PostgreSQL (`EMAILVERIFY_OPTIMISTIC=off`, and every hot use-case's
//! last try): a link confirmation reads its token and flow before it takes the user's
//! lock, so whatever changed while it waited for the lock is read again under it. The
//! test holds the user's lock itself, as a concurrent use-case would, changes the rows,
//! and lets go; the interleaving is exact (the confirmation is seen waiting first).
//! PostgreSQL only: SQLite's one connection lets nothing in between.

use std::sync::Arc;
use std::time::Duration;

use tokio::process::Command;

use emailverify::grpc::pb;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, Statement, TransactionTrait};
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

/// A transaction of the test's own that holds `user`'s lock, taken the way every locking
/// use-case takes it (bumping the version), and its backend's pid.
struct Holder {
    tx: DatabaseTransaction,
    pid: i64,
}

async fn hold_lock(app: &TestApp, user: &str) -> Holder {
    let tx = app.db.begin().await.unwrap();
    let taken = tx
        .execute_unprepared(&format!(
            "UPDATE users SET version = emailverify_next_version() WHERE user_id = '{user}'"
        ))
        .await
        .unwrap();
    assert_eq!(taken.rows_affected(), 1);
    let pid = tx
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_backend_pid()::bigint AS pid",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "pid")
        .unwrap();
    Holder { tx, pid }
}

impl Holder {
    /// Waits (bounded) until another backend waits for this one's locks: the service's
    /// statement, queued behind the user's lock.
    async fn until_someone_waits(&self, app: &TestApp) {
        self.until_waiting(app, 1).await
    }

    /// Waits (bounded) until `n` other backends wait, the first for this one's lock (a
    /// later one waits for the one before it, queued on the same row).
    async fn until_waiting(&self, app: &TestApp, n: i64) {
        let direct = format!(
            "pg_stat_activity WHERE {} = ANY(pg_blocking_pids(pid))",
            self.pid
        );
        let all = "pg_stat_activity WHERE datname = current_database() \
                   AND cardinality(pg_blocking_pids(pid)) > 0";
        for _ in 0..2_000 {
            if app.count(&direct).await > 0 && app.count(all).await >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{n} statement(s) did not come to wait for the user's lock within 20 s");
    }

    /// Runs `sql` in the holding transaction, then commits: the lock is let go.
    async fn change_and_let_go(self, sql: &str) {
        self.tx.execute_unprepared(sql).await.unwrap();
        self.tx.commit().await.unwrap();
    }
}

/// user-1's sign-up, and the token of the link it mailed.
async fn sign_up_link(app: &TestApp) -> String {
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    app.token_in(&app.next_mail().await)
}

/// ConfirmLink of `token` while the test holds `user`'s lock: once the confirmation waits
/// for it, `sql` runs under the lock and the lock is let go. The confirmation's answer.
async fn confirm_while_held(
    app: &TestApp,
    user: &str,
    token: &str,
    sql: &str,
) -> Result<pb::ConfirmLinkResponse, tonic::Status> {
    let holder = hold_lock(app, user).await;
    let (answer, ()) = tokio::join!(app.confirm(token), async {
        holder.until_someone_waits(app).await;
        holder.change_and_let_go(sql).await;
    });
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_superseded_while_its_confirmation_waited_for_the_lock_is_token_superseded() {
    let Some(app) = locked_app().await else {
        return;
    };
    let token = sign_up_link(&app).await;

    // What a resend does under the lock: the link is replaced.
    let answer = confirm_while_held(
        &app,
        "user-1",
        &token,
        "UPDATE tokens SET state = 'superseded' WHERE state = 'live' \
                 AND flow_id IN (SELECT flow_id FROM flows WHERE user_id = 'user-1')",
    )
    .await;
    // Not TOKEN_USED: the page would tell a person their address was confirmed.
    assert_reason(
        &expect_err(answer),
        Code::FailedPrecondition,
        "TOKEN_SUPERSEDED",
    );
    assert!(!app.status("user-1").await.unwrap().email_verified);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_of_a_user_erased_while_its_confirmation_waited_is_token_not_found() {
    let Some(app) = locked_app().await else {
        return;
    };
    let token = sign_up_link(&app).await;

    // What EraseUser does under the lock (store/erase.rs), tokens first.
    let answer = confirm_while_held(
        &app,
        "user-1",
        &token,
        "DELETE FROM tokens WHERE flow_id IN \
                   (SELECT flow_id FROM flows WHERE user_id = 'user-1'); \
                 DELETE FROM outbox WHERE user_id = 'user-1'; \
                 DELETE FROM flows WHERE user_id = 'user-1'; \
                 DELETE FROM events WHERE user_id = 'user-1'; \
                 DELETE FROM users WHERE user_id = 'user-1'",
    )
    .await;
    // Not INTERNAL: the link is gone with its user, as on the optimistic path.
    assert_reason(&expect_err(answer), Code::NotFound, "TOKEN_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_lock_set_while_a_link_confirmation_waited_stays() {
    /// Far ahead of the service's clock (Unix ms, in the 23rd century).
    const LOCKED_UNTIL: i64 = 9_000_000_000_000;
    let Some(app) = locked_app().await else {
        return;
    };
    app.verified_user("user-1", "old@example.com").await;
    app.request_change("user-1", "new@example.org")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);

    // What five wrong codes do under the lock: the flow's codes are locked. (The link
    // is not: it confirms step 1, and step 2's new code starts a fresh count, but the
    // lock in force still holds it back.)
    let answer = confirm_while_held(
        &app,
        "user-1",
        &token,
        &format!(
            "UPDATE flows SET failed_codes = 5, locked_until = {LOCKED_UNTIL} \
             WHERE user_id = 'user-1' AND state = 'pending'"
        ),
    )
    .await;
    assert_eq!(answer.unwrap().outcome(), pb::Outcome::CurrentConfirmed);
    // The flow written back is the one read under the lock: the lock stayed.
    assert_eq!(
        app.count(&format!(
            "flows WHERE user_id = 'user-1' AND state = 'pending' \
             AND locked_until = {LOCKED_UNTIL}"
        ))
        .await,
        1,
        "the confirmation wrote back the flow it read before the lock"
    );
    let right = app.next_mail().await.code();
    assert_reason(
        &expect_err(app.confirm_code("user-1", &right).await),
        Code::ResourceExhausted,
        "LOCKED_OUT",
    );
}

/// A running service whose one link mail (user-1's sign-up) died, and the command that
/// gives dead mails another chance, for that service's database and keys.
async fn a_dead_link_mail() -> Option<(TestApp, Arc<SmtpSink>, String)> {
    if !postgres_available().await {
        return None;
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
    Some((app, smtp, key))
}

fn retry_dead(app: &TestApp, key: &str) -> Command {
    let mut retry = command(&["outbox", "retry-dead"]);
    retry
        .env("DATABASE_URL", &app.db_url)
        .env("EMAILVERIFY_TOKEN_KEYS", key)
        .env("EMAILVERIFY_PUBLIC_URL", &app.http_base);
    retry
}

/// `outbox retry-dead` checks that a dead link mail's flow is pending, then takes the
/// user's lock to give it a fresh link: a flow cancelled meanwhile stays cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_dead_leaves_a_flow_cancelled_while_it_waited_for_the_lock_alone() {
    let Some((app, _smtp, key)) = a_dead_link_mail().await else {
        return;
    };
    let holder = hold_lock(&app, "user-1").await;
    let mut retry = retry_dead(&app, &key);
    let (ran, ()) = tokio::join!(run_ok(&mut retry), async {
        holder.until_someone_waits(&app).await;
        // What CancelChange / "this wasn't me" do under the lock.
        holder
            .change_and_let_go(
                "UPDATE flows SET state = 'cancelled' WHERE user_id = 'user-1' \
                 AND state = 'pending'",
            )
            .await;
    });
    assert!(
        ran.stdout.contains("sent 0 fresh link(s), left 1 dead"),
        "{}",
        ran.stdout
    );
    assert_eq!(app.count("flows WHERE state = 'pending'").await, 0);
    app.assert_no_mail().await;
}

/// Two runs of `outbox retry-dead` at once give a dead mail ONE fresh link: the second
/// finds it replaced once it has the user's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_retry_dead_at_once_send_one_fresh_link() {
    let Some((app, _smtp, key)) = a_dead_link_mail().await else {
        return;
    };
    let holder = hold_lock(&app, "user-1").await;
    let (mut one, mut two) = (retry_dead(&app, &key), retry_dead(&app, &key));
    let (first, second, ()) = tokio::join!(run_ok(&mut one), run_ok(&mut two), async {
        holder.until_waiting(&app, 2).await;
        holder.change_and_let_go("SELECT 1").await;
    });
    let said = format!("{}{}", first.stdout, second.stdout);
    assert_eq!(said.matches("sent 1 fresh link(s)").count(), 1, "{said}");
    let mail = app.next_mail().await;
    app.assert_no_mail().await;
    app.confirm(&app.token_in(&mail))
        .await
        .expect("the one fresh link works");
}
