//! Changing a verified address: the current address confirms first, then the new one;
//! a completed change tells the old address.

use emailverify::grpc::pb;
use tonic::Code;

use crate::helpers::{Backend, assert_reason, expect_err, spawn_app};

async fn a_change_needs_both_addresses_and_then_tells_the_old_one(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "old@example.com").await;

    // Step 1: the link goes to the CURRENT address and names the new one, masked.
    let flow = app
        .request_change("user-1", "new@example.org")
        .await
        .unwrap();
    assert_eq!(flow.kind(), pb::FlowKind::Change);
    assert_eq!(flow.step(), pb::FlowStep::ConfirmCurrent);
    assert_eq!(flow.masked_recipient, "o***@example.com");
    let first = app.next_mail().await;
    assert_eq!(first.to, vec!["old@example.com".to_string()]);
    assert!(first.text.contains("n***@example.org"), "{}", first.text);
    assert!(
        !first.text.contains("new@example.org"),
        "the new address is masked"
    );
    let status = app.status("user-1").await.unwrap();
    assert_eq!(
        status.email, "old@example.com",
        "nothing changes before both confirmations"
    );

    // Step 2: confirming the current address sends a link to the NEW address.
    let step1 = app.confirm(&app.token_in(&first)).await.unwrap();
    assert_eq!(step1.outcome(), pb::Outcome::CurrentConfirmed);
    assert_eq!(step1.email, "old@example.com");
    let after1 = step1.flow.unwrap();
    assert_eq!(after1.step(), pb::FlowStep::ConfirmNew);
    assert_eq!(after1.masked_recipient, "n***@example.org");
    assert_eq!(after1.flow_id, flow.flow_id);
    let second = app.next_mail().await;
    assert_eq!(second.to, vec!["new@example.org".to_string()]);
    assert_eq!(app.status("user-1").await.unwrap().email, "old@example.com");

    // Done: the address changes, and the old address gets a notice.
    let step2 = app.confirm(&app.token_in(&second)).await.unwrap();
    assert_eq!(step2.outcome(), pb::Outcome::EmailChanged);
    assert_eq!(step2.email, "new@example.org");
    assert_eq!(step2.flow.unwrap().step(), pb::FlowStep::Done);
    let notice = app.next_mail().await;
    assert_eq!(notice.to, vec!["old@example.com".to_string()]);
    assert_eq!(notice.subject, "Your email address has been changed");
    // Without EMAILVERIFY_SUPPORT_CONTACT the notice points to the app, and never asks
    // for a reply (it comes from an address nobody reads).
    assert!(
        notice.text.contains("n***@example.org") && notice.text.contains("Help in the wallet app")
    );
    assert!(!notice.text.contains("reply"), "{}", notice.text);
    assert!(
        !notice.text.contains("/verify?token="),
        "a notice carries no link"
    );

    let status = app.status("user-1").await.unwrap();
    assert_eq!(status.email, "new@example.org");
    assert!(status.email_verified);
    assert!(status.pending.is_none());
    // The old address is free again.
    app.verified_user("user-2", "old@example.com").await;
}

async fn repeating_a_change_returns_its_flow_and_a_new_one_replaces_it(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "old@example.com").await;
    let first = app
        .request_change("user-1", "new@example.com")
        .await
        .unwrap();
    let first_link = app.token_in(&app.next_mail().await);

    // A client retrying after a network error: the same flow, no second mail.
    let again = app
        .request_change("user-1", "new@example.com")
        .await
        .unwrap();
    assert_eq!(again.flow_id, first.flow_id);
    app.assert_no_mail().await;

    // Another new address replaces the pending change and its link.
    let other = app
        .request_change("user-1", "other@example.com")
        .await
        .unwrap();
    assert_ne!(other.flow_id, first.flow_id);
    let mail = app.next_mail().await;
    assert_eq!(
        mail.to,
        vec!["old@example.com".to_string()],
        "the current address first"
    );
    assert_reason(
        &expect_err(app.confirm(&first_link).await),
        Code::FailedPrecondition,
        "TOKEN_SUPERSEDED",
    );
    assert_eq!(
        app.confirm(&app.token_in(&mail)).await.unwrap().outcome(),
        pb::Outcome::CurrentConfirmed
    );
}

async fn without_a_verified_address_a_change_is_a_verification(backend: Backend) {
    let app = spawn_app(backend).await;
    let flow = app
        .request_change("user-1", "jane@example.com")
        .await
        .unwrap();
    assert_eq!(flow.kind(), pb::FlowKind::Verify);
    assert_eq!(flow.step(), pb::FlowStep::ConfirmNew);
    let mail = app.next_mail().await;
    assert_eq!(mail.to, vec!["jane@example.com".to_string()]);
    let ok = app.confirm(&app.token_in(&mail)).await.unwrap();
    assert_eq!(ok.outcome(), pb::Outcome::EmailVerified);
}

async fn cancelling_a_change_kills_its_links_and_keeps_the_address(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "old@example.com").await;
    app.request_change("user-1", "new@example.org")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);

    app.cancel("user-1").await.unwrap();

    assert_reason(
        &expect_err(app.confirm(&token).await),
        Code::FailedPrecondition,
        "TOKEN_SUPERSEDED",
    );
    let status = app.status("user-1").await.unwrap();
    assert_eq!(status.email, "old@example.com");
    assert!(status.pending.is_none());
    assert_reason(
        &expect_err(app.cancel("user-1").await),
        Code::FailedPrecondition,
        "NO_PENDING_FLOW",
    );
}

async fn the_change_can_be_confirmed_through_the_link_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "old@example.com").await;
    app.request_change("user-1", "new@example.org")
        .await
        .unwrap();
    let first = app.token_in(&app.next_mail().await);

    let page = app.post_form("/verify", &first).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("check your new inbox"));
    let second = app.token_in(&app.next_mail().await);
    let page = app.post_form("/verify", &second).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Email address changed"));
    assert_eq!(app.status("user-1").await.unwrap().email, "new@example.org");
}

crate::on_both_backends!(
    a_change_needs_both_addresses_and_then_tells_the_old_one,
    repeating_a_change_returns_its_flow_and_a_new_one_replaces_it,
    without_a_verified_address_a_change_is_a_verification,
    cancelling_a_change_kills_its_links_and_keeps_the_address,
    the_change_can_be_confirmed_through_the_link_pages,
);
