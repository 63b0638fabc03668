//! Delivery status, bounces, complaints and suppression (API.md): what the relay says at
//! send time and what comes back later decide `Flow.delivery`, and an inbox with no such
//! mailbox (5.1.x) or a complaint is suppressed: requests to it answer
//! ADDRESS_UNDELIVERABLE and send nothing, until the TTL passes or support lifts it.

use std::time::Duration;

use emailverify::grpc::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{Backend, TestApp, assert_reason, eventually, expect_err, spawn_app_with};

mod abuse;
mod inbound;
mod reports;

async fn app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |s| {
        s.bounces.suppression_ttl = "1h".into();
        // A retried mail stays RETRYING for the test's whole life.
        s.mail_retry_base = "1h".into();
    })
    .await
}

async fn lift(app: &TestApp, email: &str) -> Result<(), tonic::Status> {
    app.grpc
        .clone()
        .lift_suppression(pb::LiftSuppressionRequest {
            email: email.into(),
        })
        .await
        .map(|_| ())
}

/// The pending flow's delivery state and detail, once it is `want`.
async fn delivery_becomes(app: &TestApp, user: &str, want: pb::DeliveryState) -> String {
    eventually(
        &format!("{user}'s link mail is {want:?}"),
        Duration::from_secs(15),
        async || {
            let flow = app.status(user).await.ok()?.pending?;
            (flow.delivery() == want).then_some(flow.delivery_detail)
        },
    )
    .await
}

/// ADDRESS_UNDELIVERABLE with its metadata: `cause`, and `until` for a bounce only.
fn assert_undeliverable(status: &tonic::Status, cause: &str) -> Option<String> {
    assert_reason(status, Code::FailedPrecondition, "ADDRESS_UNDELIVERABLE");
    let info = status.get_details_error_info().unwrap();
    assert_eq!(info.metadata["cause"], cause, "{status:?}");
    let until = info.metadata.get("until").cloned();
    if let Some(until) = &until {
        assert!(
            humantime::parse_rfc3339(until).is_ok(),
            "until is RFC 3339: {until}"
        );
    }
    assert_eq!(until.is_some(), cause == "bounced", "{status:?}");
    until
}

async fn a_mailbox_refused_with_5_1_1_is_suppressed_until_the_ttl_passes(backend: Backend) {
    let app = app(backend).await;
    app.smtp.reply_next(&["550 5.1.1 no such user"]);
    app.request_verification("user-1", "jane.doe@example.com")
        .await
        .unwrap();
    let detail = delivery_becomes(&app, "user-1", pb::DeliveryState::Failed).await;
    assert!(detail.contains("550"), "{detail}");
    assert!(!detail.contains("jane.doe@"), "no full address: {detail}");
    app.eventually_count("suppressions WHERE cause = 'bounced'", 1)
        .await;

    // The same request again, another spelling of the inbox, another user: all refused.
    for (user, email) in [
        ("user-1", "jane.doe@example.com"),
        ("user-1", "Jane.Doe@example.com"),
        ("user-2", "jane.doe+wallet@example.com"),
    ] {
        let err = expect_err(app.request_verification(user, email).await);
        assert_undeliverable(&err, "bounced");
    }
    // A change to it, and a resend of the pending link to it.
    app.verified_user("user-3", "other@example.com").await;
    let err = expect_err(app.request_change("user-3", "jane.doe@example.com").await);
    assert_undeliverable(&err, "bounced");
    app.clock.advance(Duration::from_secs(61));
    let err = expect_err(app.resend("user-1").await);
    let until = assert_undeliverable(&err, "bounced").unwrap();
    let until = humantime::parse_rfc3339(&until).unwrap();
    let until_ms = until
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let left = until_ms - emailverify::clock::Clock::now_ms(&app.clock);
    assert!(
        (0..=3_600_000).contains(&left),
        "suppressed for the TTL: {left} ms left"
    );
    app.assert_no_mail().await;
    // Refusals of known users are audited (after the answer, so: eventually), user-1's
    // two requests within the minute as one row.
    app.eventually_count("events WHERE detail LIKE 'ADDRESS_UNDELIVERABLE%'", 3)
        .await;

    // After the TTL the inbox is mailed again.
    app.clock.advance(Duration::from_secs(3600));
    app.request_verification("user-4", "jane.doe@example.com")
        .await
        .unwrap();
    assert_eq!(app.next_mail().await.to, vec!["jane.doe@example.com"]);
}

async fn a_policy_refusal_fails_the_mail_without_suppressing_the_address(backend: Backend) {
    let app = app(backend).await;
    app.smtp
        .reply_next(&["550 5.7.1 message refused by policy"]);
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let detail = delivery_becomes(&app, "user-1", pb::DeliveryState::Failed).await;
    assert!(detail.contains("550"), "{detail}");
    app.eventually_count("outbox WHERE state = 'dead' AND sealed_link IS NULL", 1)
        .await;
    assert_eq!(app.count("suppressions").await, 0);

    app.request_verification("user-2", "jane@example.com")
        .await
        .expect("the address is not suppressed");
    assert_eq!(app.next_mail().await.to, vec!["jane@example.com"]);
}

async fn lift_suppression_lifts_it_and_answers_not_suppressed_otherwise(backend: Backend) {
    let app = app(backend).await;
    let err = expect_err(lift(&app, "jane@example.com").await);
    assert_reason(&err, Code::NotFound, "NOT_SUPPRESSED");
    let err = expect_err(lift(&app, "not an address").await);
    assert_reason(&err, Code::InvalidArgument, "INVALID_EMAIL");

    app.smtp.reply_next(&["550 5.1.1 no such user"]);
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    app.eventually_count("suppressions", 1).await;
    let err = expect_err(app.request_verification("user-2", "jane@example.com").await);
    assert_undeliverable(&err, "bounced");

    // Any spelling of the inbox lifts it.
    lift(&app, "JANE+support@example.com").await.unwrap();
    assert_eq!(app.count("suppressions").await, 0);
    app.request_verification("user-2", "jane@example.com")
        .await
        .expect("lifted");
    assert_eq!(app.next_mail().await.to, vec!["jane@example.com"]);
    let err = expect_err(lift(&app, "jane@example.com").await);
    assert_reason(&err, Code::NotFound, "NOT_SUPPRESSED");
}

async fn the_pending_flow_shows_its_link_mail_queued_sent_retrying_failed(backend: Backend) {
    let app = app(backend).await;
    // Accepted: QUEUED when committed, SENT once the relay took it.
    let flow = app
        .request_verification("user-1", "a@example.com")
        .await
        .unwrap();
    assert_eq!(flow.delivery(), pb::DeliveryState::Queued);
    assert_eq!(flow.delivery_detail, "");
    app.next_mail().await;
    let detail = delivery_becomes(&app, "user-1", pb::DeliveryState::Sent).await;
    assert_eq!(detail, "");
    // A retry of the same request shows the same flow's delivery.
    let again = app
        .request_verification("user-1", "a@example.com")
        .await
        .unwrap();
    assert_eq!(again.delivery(), pb::DeliveryState::Sent);

    // A temporary failure: RETRYING, with the relay's reply.
    app.smtp.reply_next(&["451 4.3.0 try again later"]);
    app.request_verification("user-2", "b@example.com")
        .await
        .unwrap();
    let detail = delivery_becomes(&app, "user-2", pb::DeliveryState::Retrying).await;
    assert!(detail.contains("451"), "{detail}");

    // Refused for good: FAILED.
    app.smtp.reply_next(&["550 5.7.1 refused"]);
    app.request_verification("user-3", "c@example.com")
        .await
        .unwrap();
    let detail = delivery_becomes(&app, "user-3", pb::DeliveryState::Failed).await;
    assert!(detail.contains("550"), "{detail}");

    // A resend queues a new link mail: QUEUED again, then SENT.
    app.clock.advance(Duration::from_secs(61));
    let flow = app.resend("user-3").await.unwrap();
    assert_eq!(flow.delivery(), pb::DeliveryState::Queued);
    app.next_mail().await;
    delivery_becomes(&app, "user-3", pb::DeliveryState::Sent).await;
}

crate::on_both_backends!(
    a_mailbox_refused_with_5_1_1_is_suppressed_until_the_ttl_passes,
    a_policy_refusal_fails_the_mail_without_suppressing_the_address,
    lift_suppression_lifts_it_and_answers_not_suppressed_otherwise,
    the_pending_flow_shows_its_link_mail_queued_sent_retrying_failed,
);
