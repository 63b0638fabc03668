//! Sign-up / add email: RequestVerification, ConfirmLink, GetStatus.

use emailverify::grpc::pb;
use tonic::Code;

use crate::helpers::{Backend, assert_reason, expect_err, spawn_app};

async fn a_new_address_gets_a_link_and_confirming_it_verifies_the_address(backend: Backend) {
    let app = spawn_app(backend).await;

    let flow = app
        .request_verification("user-1", "  Jane@Example.COM ")
        .await
        .unwrap();
    assert_eq!(flow.kind(), pb::FlowKind::Verify);
    assert_eq!(flow.step(), pb::FlowStep::ConfirmNew);
    assert_eq!(flow.masked_recipient, "J***@example.com");
    assert!(flow.expires_at.unwrap().seconds > flow.resend_available_at.unwrap().seconds);

    let status = app.status("user-1").await.unwrap();
    assert_eq!(status.email, "Jane@example.com");
    assert!(!status.email_verified);
    assert!(status.verified_at.is_none());
    assert_eq!(status.pending.unwrap().flow_id, flow.flow_id);

    let mail = app.next_mail().await;
    assert_eq!(mail.to, vec!["Jane@example.com".to_string()]);
    assert_eq!(mail.subject, "Confirm your email address");
    assert!(
        mail.html.contains("/verify?token="),
        "the HTML part carries the link too"
    );
    let confirmed = app.confirm(&app.token_in(&mail)).await.unwrap();

    assert_eq!(confirmed.user_id, "user-1");
    assert_eq!(confirmed.outcome(), pb::Outcome::EmailVerified);
    assert_eq!(confirmed.email, "Jane@example.com");
    let done = confirmed.flow.unwrap();
    assert_eq!(done.step(), pb::FlowStep::Done);
    assert_eq!(done.flow_id, flow.flow_id);
    let status = app.status("user-1").await.unwrap();
    assert!(status.email_verified);
    assert!(status.verified_at.is_some());
    assert!(status.pending.is_none());
}

async fn repeating_the_same_request_returns_the_same_flow_and_sends_one_mail(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app
        .request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let again = app
        .request_verification("user-1", "jane@EXAMPLE.com")
        .await
        .unwrap();

    assert_eq!(first.flow_id, again.flow_id);
    app.next_mail().await;
    app.assert_no_mail().await;
    assert_eq!(app.count("outbox").await, 1);
}

async fn a_new_request_supersedes_the_pending_flow_and_its_link(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = app
        .request_verification("user-1", "old@example.com")
        .await
        .unwrap();
    let old_token = app.token_in(&app.next_mail().await);

    let second = app
        .request_verification("user-1", "new@example.com")
        .await
        .unwrap();
    let new_mail = app.next_mail().await;

    assert_ne!(first.flow_id, second.flow_id);
    assert_eq!(new_mail.to, vec!["new@example.com".to_string()]);
    assert_reason(
        &expect_err(app.confirm(&old_token).await),
        Code::FailedPrecondition,
        "TOKEN_SUPERSEDED",
    );
    let ok = app.confirm(&app.token_in(&new_mail)).await.unwrap();
    assert_eq!(ok.email, "new@example.com");
}

async fn nepali_locale_sends_the_mail_in_nepali_and_unknown_tags_fall_back_to_english(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let mut grpc = app.grpc.clone();
    grpc.request_verification(pb::RequestVerificationRequest {
        user_id: "u-ne".into(),
        email: "ram@example.com".into(),
        locale: "ne-NP".into(),
    })
    .await
    .unwrap();
    let mail = app.next_mail().await;
    assert_eq!(mail.subject, "आफ्नो इमेल ठेगाना पुष्टि गर्नुहोस्");
    assert!(mail.text.contains("२४ घण्टा"), "{}", mail.text);

    grpc.request_verification(pb::RequestVerificationRequest {
        user_id: "u-xx".into(),
        email: "sita@example.com".into(),
        locale: "tlh".into(),
    })
    .await
    .unwrap();
    let mail = app.next_mail().await;
    assert_eq!(mail.subject, "Confirm your email address");
    assert!(mail.text.contains("24 hours"));
}

async fn the_mail_has_a_stable_message_id_and_names_the_cancel_option(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    assert!(
        mail.message_id.ends_with("@wallet.test"),
        "{}",
        mail.message_id
    );
    assert_eq!(mail.from, "no-reply@wallet.test");
    assert!(mail.text.contains("“This wasn’t me”"), "{}", mail.text);
}

crate::on_both_backends!(
    a_new_address_gets_a_link_and_confirming_it_verifies_the_address,
    repeating_the_same_request_returns_the_same_flow_and_sends_one_mail,
    a_new_request_supersedes_the_pending_flow_and_its_link,
    nepali_locale_sends_the_mail_in_nepali_and_unknown_tags_fall_back_to_english,
    the_mail_has_a_stable_message_id_and_names_the_cancel_option,
);
