//! EraseUser (API.md, "Erasure and retention"): afterwards no row holds the user's address
//! or id but the one `user_erased` event (and a suppression of the address, if any); the
//! address is free for others; repeating it is OK; the old links are unknown.

use emailverify::grpc::pb;
use tonic::Code;

use crate::helpers::{Backend, TestApp, assert_reason, expect_err, spawn_app};

async fn erase(app: &TestApp, user: &str) -> Result<(), tonic::Status> {
    app.grpc
        .clone()
        .erase_user(pb::EraseUserRequest {
            user_id: user.into(),
        })
        .await
        .map(|_| ())
}

async fn erasure_leaves_only_the_user_erased_event(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "jane@example.com").await;
    app.request_change("user-1", "jane.new@example.org")
        .await
        .unwrap();
    let old_link = app.token_in(&app.next_mail().await);
    app.verified_user("user-9", "someone@example.net").await;
    let buckets_before = app.count("rate_limits").await;

    erase(&app, "user-1").await.expect("erased");

    let dump = app.dump_database().await;
    for gone in ["jane@example.com", "jane.new@example.org", "j***"] {
        assert!(
            !dump.contains(gone),
            "{gone} is still in the database: {dump}"
        );
    }
    assert_eq!(app.count("users WHERE user_id = 'user-1'").await, 0);
    assert_eq!(app.count("flows WHERE user_id = 'user-1'").await, 0);
    assert_eq!(app.count("outbox WHERE user_id = 'user-1'").await, 0);
    assert_eq!(
        app.count("events WHERE user_id = 'user-1'").await,
        1,
        "one event is left"
    );
    assert_eq!(
        app.count("events WHERE user_id = 'user-1' AND event_type = 'user_erased' AND masked_address = '' AND detail = ''")
            .await,
        1
    );
    // The user's request bucket and its inbox's link-mail bucket went (the new address
    // got no link yet, so it had none); user-9's stay.
    assert_eq!(app.count("rate_limits").await, buckets_before - 2);
    assert_eq!(app.count("rate_limits").await, 2);
    assert!(
        dump.contains("someone@example.net"),
        "another user is untouched"
    );

    // Unknown now; its links too.
    assert_reason(
        &expect_err(app.status("user-1").await),
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    assert_reason(
        &expect_err(app.confirm(&old_link).await),
        Code::NotFound,
        "TOKEN_NOT_FOUND",
    );
    // Erasing again, or a user never seen: OK, and nothing more is written.
    erase(&app, "user-1").await.expect("erasing twice is OK");
    erase(&app, "never-seen")
        .await
        .expect("an unknown user is OK");
    assert_eq!(app.count("events WHERE user_id = 'user-1'").await, 1);
    assert_eq!(app.count("events WHERE user_id = 'never-seen'").await, 0);
    assert_reason(
        &expect_err(erase(&app, "").await),
        Code::InvalidArgument,
        "INVALID_USER_ID",
    );

    // The address is free for someone else.
    app.verified_user("user-2", "jane@example.com").await;
    assert!(app.status("user-2").await.unwrap().email_verified);
}

crate::on_both_backends!(erasure_leaves_only_the_user_erased_event);
