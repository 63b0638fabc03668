//! Optimistic use-cases (`store::optimistic`, PostgreSQL only): a try that read without a
//! lock commits only if what it read still holds, all or nothing. Store-level, against a
//! real PostgreSQL, so that the interleavings are exact rather than left to chance (the
//! races through the service are in `links.rs`, `limits.rs` and `process.rs`).

use emailverify::domain::{EmailAddress, Rate, UserId};
use emailverify::error::CoreError;
use emailverify::store::Store;

use emailverify::domain::Keyring;

use crate::helpers::process::serve;
use crate::helpers::{Backend, SmtpSink, TestDb, fresh_database, metric, postgres_available};

async fn store() -> Option<(Store, TestDb)> {
    if !postgres_available().await {
        return None;
    }
    let db = fresh_database(Backend::Postgres).await;
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    Some((store, db))
}

fn uid(raw: &str) -> UserId {
    UserId::parse(raw).unwrap()
}

fn address(raw: &str) -> EmailAddress {
    EmailAddress::parse(raw).unwrap()
}

fn rate(raw: &str) -> Rate {
    Rate::parse(raw).unwrap()
}

/// An optimistic sign-up's steps for `user` and `email` at `now` (not committed).
async fn optimistic_sign_up(
    store: &Store,
    user: &str,
    email: &str,
    now: i64,
) -> emailverify::store::Tx {
    let tx = store.begin_optimistic().await.unwrap();
    assert!(tx.is_optimistic());
    let (_, step) = tx
        .create_or_lock_user_taking(
            &uid(user),
            &address(email),
            now,
            &format!("user:{user}"),
            rate("100/1h"),
        )
        .await
        .unwrap();
    assert_eq!(step, Ok(()), "an optimistic step answers at commit");
    tx.set_unverified_email(&uid(user), &address(email), now)
        .await
        .unwrap();
    tx
}

/// An optimistic sign-up with nothing in its way: committed.
async fn signed_up(store: &Store, user: &str, email: &str, now: i64) {
    optimistic_sign_up(store, user, email, now)
        .await
        .commit()
        .await
        .unwrap();
}

async fn email_of(store: &Store, user: &str) -> Option<String> {
    store.user(&uid(user)).await.unwrap().and_then(|u| u.email)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_whose_user_was_locked_meanwhile_writes_nothing_and_runs_again() {
    let Some((store, _db)) = store().await else {
        return;
    };
    signed_up(&store, "u1", "first@example.com", 1_000).await;
    assert_eq!(
        email_of(&store, "u1").await.as_deref(),
        Some("first@example.com")
    );

    let stale = optimistic_sign_up(&store, "u1", "second@example.com", 2_000).await;
    // Between its read and its write, a locked use-case of the same user commits.
    let locked = store.begin().await.unwrap();
    assert!(locked.lock_user(&uid("u1")).await.unwrap().is_some());
    locked.commit().await.unwrap();

    let e = stale.commit().await.unwrap_err();
    assert_eq!(e.contended_needs_lock(), Some(false), "{e:?}");
    assert_eq!(
        email_of(&store, "u1").await.as_deref(),
        Some("first@example.com")
    );

    // Run again, nothing in between: it commits.
    signed_up(&store, "u1", "second@example.com", 3_000).await;
    assert_eq!(
        email_of(&store, "u1").await.as_deref(),
        Some("second@example.com")
    );
}

/// A user erased and created again is another user: a try that read the first never
/// writes over the second, however often the second has been locked since (versions come
/// from a sequence; counting from 0 again, the new row's version matched the stale one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_that_read_an_erased_user_never_writes_over_the_user_created_again() {
    let Some((store, _db)) = store().await else {
        return;
    };
    signed_up(&store, "u1", "first@example.com", 1_000).await;
    let stale = optimistic_sign_up(&store, "u1", "stale@example.com", 2_000).await;

    // Meanwhile the user is erased and signs up again.
    let erase = store.begin().await.unwrap();
    assert!(erase.lock_user(&uid("u1")).await.unwrap().is_some());
    erase.erase_user(&uid("u1")).await.unwrap();
    erase.commit().await.unwrap();
    signed_up(&store, "u1", "again@example.com", 3_000).await;

    let e = stale.commit().await.unwrap_err();
    assert_eq!(e.contended_needs_lock(), Some(false), "{e:?}");
    assert_eq!(
        email_of(&store, "u1").await.as_deref(),
        Some("again@example.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_tries_that_both_saw_no_user_one_creates_it_and_the_other_runs_again() {
    let Some((store, _db)) = store().await else {
        return;
    };
    let a = optimistic_sign_up(&store, "new", "a@example.com", 1_000).await;
    let b = optimistic_sign_up(&store, "new", "b@example.com", 1_000).await;
    a.commit().await.unwrap();
    let e = b.commit().await.unwrap_err();
    assert_eq!(e.contended_needs_lock(), Some(false), "{e:?}");
    assert_eq!(
        email_of(&store, "new").await.as_deref(),
        Some("a@example.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_that_refuses_at_commit_is_rate_limited_and_nothing_is_written() {
    let Some((store, _db)) = store().await else {
        return;
    };
    let one_an_hour = rate("1/1h");
    let sign_up = |user: &'static str, email: &'static str| {
        let store = store.clone();
        async move {
            let tx = store.begin_optimistic().await.unwrap();
            let (_, step) = tx
                .create_or_lock_user_taking(
                    &uid(user),
                    &address(email),
                    1_000,
                    "shared-bucket",
                    one_an_hour,
                )
                .await
                .unwrap();
            assert_eq!(step, Ok(()), "an optimistic step answers at commit");
            tx.set_unverified_email(&uid(user), &address(email), 1_000)
                .await
                .unwrap();
            tx.commit().await
        }
    };
    sign_up("first", "first@example.com").await.unwrap();
    match sign_up("second", "second@example.com").await {
        Err(CoreError::RateLimited { retry_after }) => {
            assert!(retry_after.as_secs() > 3_000, "{retry_after:?}")
        }
        other => panic!("expected RATE_LIMITED, got {other:?}"),
    }
    assert!(
        store.user(&uid("second")).await.unwrap().is_none(),
        "a refused try created its user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_address_taken_meanwhile_is_email_taken_at_commit() {
    let Some((store, _db)) = store().await else {
        return;
    };
    // Two users, each with the same address pending; each verifies it in turn.
    for user in ["alice", "bob"] {
        optimistic_sign_up(&store, user, "shared@example.com", 1_000)
            .await
            .commit()
            .await
            .unwrap();
    }
    let verify = |user: &'static str| {
        let store = store.clone();
        async move {
            let tx = store.begin_optimistic().await.unwrap();
            let (row, _) = tx
                .create_or_lock_user_taking(
                    &uid(user),
                    &address("shared@example.com"),
                    2_000,
                    &format!("user:{user}"),
                    rate("100/1h"),
                )
                .await
                .unwrap();
            assert!(!row.email_verified);
            tx.set_verified_email(&uid(user), &address("shared@example.com"), 2_000)
                .await
                .unwrap();
            tx.commit().await
        }
    };
    verify("alice").await.unwrap();
    assert!(matches!(verify("bob").await, Err(CoreError::EmailTaken)));
    let bob = store.user(&uid("bob")).await.unwrap().unwrap();
    assert!(!bob.email_verified);
}

/// Through the service: a sign-up, a second one that supersedes it (the old flow's end
/// and the new flow's start in one statement), its confirmation, then a change and both
/// its links: each commits on its first optimistic try on PostgreSQL, but the one that
/// supersedes a pending flow, which needs the lock and goes straight to its locked try;
/// SQLite runs them all locked (no optimistic try at all).
async fn the_usual_paths_commit_on_their_first_optimistic_try(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let app = serve(&db.url, &smtp, &Keyring::generate_key_base64(), &[]).await;
    app.request_verification("user-1", "first@example.com")
        .await
        .unwrap();
    smtp.next_mail().await;
    app.request_verification("user-1", "second@example.com")
        .await
        .unwrap();
    let token = app.token_in(&smtp.next_mail().await);
    app.confirm(&token).await.unwrap();
    app.request_change("user-1", "third@example.com")
        .await
        .unwrap();
    let current = app.token_in(&smtp.next_mail().await);
    app.confirm(&current).await.unwrap();
    let new = app.token_in(&smtp.next_mail().await);
    app.confirm(&new).await.unwrap();
    let status = app.status("user-1").await.unwrap();
    assert_eq!(status.email, "third@example.com");
    assert!(status.email_verified);

    let page = app.metrics().await;
    let tries = |use_case: &str, result: &str| {
        let series = format!(
            r#"emailverify_optimistic_tries_total{{use_case="{use_case}",result="{result}"}}"#
        );
        metric(&page, &series)
    };
    let expected = |n: f64| (backend == Backend::Postgres).then_some(n);
    assert_eq!(tries("request", "ended"), expected(2.0), "{page}");
    assert_eq!(tries("request", "needs_lock"), expected(1.0), "{page}");
    assert_eq!(tries("confirm_link", "ended"), expected(3.0), "{page}");
    assert_eq!(tries("request", "ran_again"), None, "{page}");
    assert_eq!(tries("confirm_link", "ran_again"), None, "{page}");
}

crate::on_both_backends!(the_usual_paths_commit_on_their_first_optimistic_try);
