//! The contract's error table, row by row, and malformed input of every field: the
//! contract's reason, a BadRequest naming the field, and nothing written.

use emailverify::grpc::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{Backend, TestApp, assert_reason, expect_err, spawn_app, spawn_app_with};

const BAD_USER_IDS: [&str; 4] = [
    "",
    "tab\tinside",
    "ünicode",
    "x-129-characters-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];
const BAD_EMAILS: [&str; 7] = [
    "",
    "   ",
    "plain",
    "@example.com",
    "jane@",
    "ja ne@example.com",
    "jane@localhost",
];
const BAD_TOKENS: [&str; 5] = [
    "",
    "short",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB",
];

fn assert_bad_field(status: &tonic::Status, reason: &str, field: &str) {
    assert_reason(status, Code::InvalidArgument, reason);
    let violations = status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations;
    assert_eq!(violations.len(), 1, "{status:?}");
    assert_eq!(violations[0].field, field);
    assert!(!violations[0].description.is_empty());
}

async fn assert_nothing_written(app: &TestApp) {
    for table in ["users", "flows", "tokens", "outbox", "events"] {
        assert_eq!(app.count(table).await, 0, "{table} was written");
    }
}

async fn malformed_input_of_every_field_is_refused_and_writes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let long_email = format!("{}@example.com", "a".repeat(250));
    for bad in BAD_USER_IDS {
        let bad = if bad.starts_with("x-129") {
            "x".repeat(129)
        } else {
            bad.to_string()
        };
        assert_bad_field(
            &expect_err(app.request_verification(&bad, "jane@example.com").await),
            "INVALID_USER_ID",
            "user_id",
        );
        assert_bad_field(
            &expect_err(app.request_change(&bad, "jane@example.com").await),
            "INVALID_USER_ID",
            "user_id",
        );
        assert_bad_field(
            &expect_err(app.resend(&bad).await),
            "INVALID_USER_ID",
            "user_id",
        );
        assert_bad_field(
            &expect_err(app.status(&bad).await),
            "INVALID_USER_ID",
            "user_id",
        );
        assert_bad_field(
            &expect_err(app.cancel(&bad).await),
            "INVALID_USER_ID",
            "user_id",
        );
    }
    for bad in BAD_EMAILS.iter().copied().chain([long_email.as_str()]) {
        assert_bad_field(
            &expect_err(app.request_verification("user-1", bad).await),
            "INVALID_EMAIL",
            "email",
        );
        assert_bad_field(
            &expect_err(app.request_change("user-1", bad).await),
            "INVALID_EMAIL",
            "new_email",
        );
    }
    for bad in BAD_TOKENS {
        assert_bad_field(
            &expect_err(app.confirm(bad).await),
            "INVALID_TOKEN",
            "token",
        );
    }
    assert_nothing_written(&app).await;
    app.assert_no_mail().await;
}

async fn an_address_verified_by_another_user_is_taken(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("alice", "jane@example.com").await;
    app.verified_user("bob", "bob@example.com").await;

    // Differs only in the case of the domain: the same address.
    let err = expect_err(app.request_verification("carol", "jane@EXAMPLE.com").await);
    assert_reason(&err, Code::AlreadyExists, "EMAIL_TAKEN");
    assert_reason(
        &expect_err(app.request_change("bob", "jane@example.com").await),
        Code::AlreadyExists,
        "EMAIL_TAKEN",
    );
    // Refused requests queue no mail.
    app.assert_no_mail().await;
    assert!(app.status("carol").await.is_err(), "carol was not recorded");
}

async fn an_address_taken_between_request_and_confirmation_is_refused_at_confirmation(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    app.request_verification("alice", "jane@example.com")
        .await
        .unwrap();
    let alice_token = app.token_in(&app.next_mail().await);
    app.verified_user("bob", "jane@example.com").await;

    assert_reason(
        &expect_err(app.confirm(&alice_token).await),
        Code::AlreadyExists,
        "EMAIL_TAKEN",
    );
    assert!(!app.status("alice").await.unwrap().email_verified);
    assert_eq!(app.post_form("/verify", &alice_token).await.status(), 409);
}

async fn unverified_claims_block_nobody(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("alice", "jane@example.com")
        .await
        .unwrap();
    app.next_mail().await;
    app.verified_user("bob", "jane@example.com").await;
}

async fn requests_that_conflict_with_the_users_own_address_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "jane@example.com").await;

    let err = expect_err(app.request_verification("user-1", "jane@example.com").await);
    assert_reason(&err, Code::FailedPrecondition, "EMAIL_ALREADY_VERIFIED");
    let err = expect_err(
        app.request_verification("user-1", "other@example.com")
            .await,
    );
    assert_reason(&err, Code::FailedPrecondition, "USE_CHANGE_FLOW");
    let err = expect_err(app.request_change("user-1", "jane@Example.com").await);
    assert_reason(&err, Code::FailedPrecondition, "SAME_EMAIL");
    app.assert_no_mail().await;
}

async fn the_users_own_address_is_checked_before_email_taken(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("alice", "alice@example.com").await;
    app.verified_user("bob", "bob@example.com").await;
    // Both USE_CHANGE_FLOW and EMAIL_TAKEN apply: the user's own address wins.
    let err = expect_err(app.request_verification("alice", "bob@example.com").await);
    assert_reason(&err, Code::FailedPrecondition, "USE_CHANGE_FLOW");
}

async fn nothing_pending_and_unknown_things_have_their_reasons(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "jane@example.com").await;

    for user in ["user-1", "nobody"] {
        assert_reason(
            &expect_err(app.resend(user).await),
            Code::FailedPrecondition,
            "NO_PENDING_FLOW",
        );
        assert_reason(
            &expect_err(app.cancel(user).await),
            Code::FailedPrecondition,
            "NO_PENDING_FLOW",
        );
    }
    assert_reason(
        &expect_err(app.status("nobody").await),
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    assert_reason(
        &expect_err(app.confirm(&"A".repeat(43)).await),
        Code::NotFound,
        "TOKEN_NOT_FOUND",
    );
}

async fn with_api_tokens_callers_must_authenticate_but_health_stays_open(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.api_tokens = Some("s3cret-a, s3cret-b".into())
    })
    .await;

    let err = expect_err(app.status("user-1").await);
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(pb::GetStatusRequest {
        user_id: "user-1".into(),
    });
    req.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(
        app.grpc.clone().get_status(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    let mut req = tonic::Request::new(pb::GetStatusRequest {
        user_id: "user-1".into(),
    });
    req.metadata_mut()
        .insert("authorization", "Bearer s3cret-b".parse().unwrap());
    let err = app.grpc.clone().get_status(req).await.unwrap_err();
    assert_reason(&err, Code::NotFound, "USER_NOT_FOUND");

    let channel = app.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "emailverify.v1.EmailVerification".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        resp.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

async fn oversized_requests_are_refused_before_they_reach_the_core(backend: Backend) {
    let app = spawn_app(backend).await;
    let huge = format!("{}@example.com", "a".repeat(20 * 1024));
    let err = expect_err(app.request_verification("user-1", &huge).await);
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    let form = app.post_form("/verify", &"A".repeat(10 * 1024)).await;
    assert_eq!(form.status(), 413);
    assert_nothing_written(&app).await;
}

async fn refusals_never_tell_whose_an_address_is_beyond_email_taken(backend: Backend) {
    let app = spawn_app(backend).await;
    // Someone else's pending (unverified) claim is invisible: the request just works.
    app.request_verification("alice", "shared@example.com")
        .await
        .unwrap();
    let alice_mail = app.next_mail().await;
    app.request_verification("bob", "shared@example.com")
        .await
        .unwrap();
    let bob_mail = app.next_mail().await;
    assert_eq!(alice_mail.to, bob_mail.to);
    // Unknown and known users without a pending flow look the same.
    let known = expect_err(app.resend("alice-without-flow").await);
    app.cancel("alice").await.unwrap();
    let emptied = expect_err(app.resend("alice").await);
    assert_eq!(known.code(), emptied.code());
    assert_eq!(known.message(), emptied.message());
}

crate::on_both_backends!(
    oversized_requests_are_refused_before_they_reach_the_core,
    refusals_never_tell_whose_an_address_is_beyond_email_taken,
    malformed_input_of_every_field_is_refused_and_writes_nothing,
    an_address_verified_by_another_user_is_taken,
    an_address_taken_between_request_and_confirmation_is_refused_at_confirmation,
    unverified_claims_block_nobody,
    requests_that_conflict_with_the_users_own_address_are_refused,
    the_users_own_address_is_checked_before_email_taken,
    nothing_pending_and_unknown_things_have_their_reasons,
    with_api_tokens_callers_must_authenticate_but_health_stays_open,
);
