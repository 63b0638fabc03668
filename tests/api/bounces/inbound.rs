//! The inbound listener: delivery status notifications and complaints as Postfix, Exim
//! and Amazon SES send them, over SMTP on loopback, matched to the mail by its tag or its
//! Message-ID; and a listener that is no relay and takes what it cannot read.

use std::net::SocketAddr;
use std::time::Duration;

use emailverify::grpc::pb;
use tonic::Code;

use super::reports::{self, BOUNCE, tagged};
use super::{assert_undeliverable, delivery_becomes, lift};
use crate::helpers::{Backend, TestApp, assert_reason, expect_err, metric, spawn_app_with};

async fn app(backend: Backend) -> (TestApp, SocketAddr) {
    // Port 0: the listener takes a free port as it binds (no race with other tests).
    let app = spawn_app_with(backend, |s| {
        s.bounces.bounce_address = Some(BOUNCE.into());
        s.bounces.inbound_addr = Some("127.0.0.1:0".into());
        s.bounces.suppression_ttl = "1h".into();
    })
    .await;
    let addr = app.inbound.expect("the bounce listener is on");
    (app, addr)
}

/// A link mail to `email`, sent and accepted: its tag (the Message-ID's left part, also
/// its bounce address's `+tag`) and its Message-ID.
pub(super) async fn sent(app: &TestApp, user: &str, email: &str) -> (String, String) {
    app.request_verification(user, email).await.unwrap();
    let mail = app.next_mail().await;
    delivery_becomes(app, user, pb::DeliveryState::Sent).await;
    let message_id = mail.message_id.clone();
    let (mail_id, _) = message_id.split_once('@').expect("id@domain");
    (mail_id.to_string(), message_id)
}

fn accepted(replies: &[String]) {
    assert!(
        replies
            .iter()
            .rev()
            .nth(1)
            .is_some_and(|r| r.starts_with("250")),
        "the report is accepted: {replies:?}"
    );
}

async fn a_postfix_bounce_marks_the_mail_bounced_and_suppresses_the_mailbox(backend: Backend) {
    let (app, inbound) = app(backend).await;
    let (id, message_id) = sent(&app, "user-1", "jane@example.com").await;
    let reply = "550 5.1.1 <jane@example.com>: Recipient address rejected: User unknown";
    let dsn = reports::postfix_bounce(
        &tagged(&id),
        &message_id,
        "jane@example.com",
        "5.1.1",
        reply,
    );
    accepted(&reports::send(inbound, &[&tagged(&id)], &dsn).await);

    let detail = delivery_becomes(&app, "user-1", pb::DeliveryState::Bounced).await;
    assert_eq!(detail, "5.1.1 bounced", "the status and a fixed word only");
    assert_eq!(
        app.count("events WHERE event_type = 'mail_bounced' AND actor = 'inbound'")
            .await,
        1
    );
    let err = expect_err(app.request_verification("user-2", "jane@example.com").await);
    assert_undeliverable(&err, "bounced");
    app.assert_no_mail().await;
}

async fn an_ses_policy_bounce_bounces_the_mail_but_suppresses_nothing(backend: Backend) {
    let (app, inbound) = app(backend).await;
    let (id, message_id) = sent(&app, "user-1", "jane@example.com").await;
    let reply = "550 5.7.1 Service unavailable, Client host blocked using Spamhaus";
    let dsn = reports::ses_bounce(
        &tagged(&id),
        &message_id,
        "jane@example.com",
        "5.7.1",
        reply,
    );
    accepted(&reports::send(inbound, &[&tagged(&id)], &dsn).await);

    let detail = delivery_becomes(&app, "user-1", pb::DeliveryState::Bounced).await;
    assert_eq!(detail, "5.7.1 bounced");
    assert_eq!(app.count("suppressions").await, 0);
    app.request_verification("user-2", "jane@example.com")
        .await
        .expect("not suppressed");
    app.next_mail().await;
}

async fn an_exim_delay_matched_by_message_id_is_only_recorded(backend: Backend) {
    let (app, inbound) = app(backend).await;
    let (_, message_id) = sent(&app, "user-1", "jane@example.com").await;
    // Sent to the bare bounce address: only the quoted Message-ID names the mail.
    let dsn = reports::exim_delay(BOUNCE, &message_id, "jane@example.com");
    accepted(&reports::send(inbound, &[BOUNCE], &dsn).await);

    app.eventually_count(
        "events WHERE event_type = 'mail_delayed' AND detail LIKE '4.0.0%'",
        1,
    )
    .await;
    let status = app.status("user-1").await.unwrap().pending.unwrap();
    assert_eq!(status.delivery(), pb::DeliveryState::Sent);
    assert_eq!(app.count("suppressions").await, 0);
    assert_eq!(
        app.count("events WHERE event_type = 'mail_bounced'").await,
        0
    );
}

async fn a_complaint_suppresses_the_mailbox_until_support_lifts_it(backend: Backend) {
    let (app, inbound) = app(backend).await;
    let (id, message_id) = sent(&app, "user-1", "jane@example.com").await;
    let arf = reports::arf_complaint(BOUNCE, &tagged(&id), &message_id, "jane@example.com");
    accepted(&reports::send(inbound, &[BOUNCE], &arf).await);

    app.eventually_count(
        "events WHERE event_type = 'mail_complained' AND detail = 'complained'",
        1,
    )
    .await;
    let err = expect_err(app.request_verification("user-2", "Jane@example.com").await);
    assert_undeliverable(&err, "complained");
    // A complaint does not run out.
    app.clock.advance(Duration::from_secs(90 * 24 * 3600));
    let err = expect_err(app.request_verification("user-3", "jane@example.com").await);
    assert_undeliverable(&err, "complained");
    app.assert_no_mail().await;

    lift(&app, "jane@example.com").await.unwrap();
    app.request_verification("user-3", "jane@example.com")
        .await
        .expect("lifted");
    app.next_mail().await;
}

async fn the_listener_is_no_relay_and_takes_what_it_cannot_read(backend: Backend) {
    let (app, inbound) = app(backend).await;
    // Every recipient but the bounce address is refused: never a relay.
    for rcpt in [
        "jane@example.com",
        "bounces@other.example",
        "postmaster@mail.wallet.test",
    ] {
        let replies = reports::send(inbound, &[rcpt], "Subject: x\r\n\r\nx\r\n").await;
        assert!(
            replies.iter().any(|r| r.starts_with("550")),
            "{rcpt}: {replies:?}"
        );
        assert!(
            !replies.iter().any(|r| r.starts_with("354")),
            "{rcpt}: {replies:?}"
        );
    }
    // Not a report, and a report of no mail of ours: accepted, counted.
    accepted(&reports::send(inbound, &[BOUNCE], "Subject: hello\r\n\r\nnot a report\r\n").await);
    let unknown = reports::postfix_bounce(
        &tagged("0193a3c4-0000-7000-8000-000000000000"),
        "nothing@wallet.test",
        "x@example.com",
        "5.1.1",
        "550 5.1.1 unknown",
    );
    let tag = tagged("0193a3c4-0000-7000-8000-000000000000");
    accepted(&reports::send(inbound, &[&tag], &unknown).await);
    // Over 1 MiB: refused, and the session goes on.
    let huge = format!(
        "Subject: big\r\n\r\n{}",
        format!("{}\r\n", "x".repeat(998)).repeat(1100)
    );
    let replies = reports::send(inbound, &[BOUNCE], &huge).await;
    assert!(replies.iter().any(|r| r.starts_with("552")), "{replies:?}");
    assert!(replies.last().unwrap().starts_with("221"), "{replies:?}");

    let page = app.metrics().await;
    for outcome in ["unparseable", "unmatched"] {
        let series = format!("emailverify_inbound_reports_total{{outcome=\"{outcome}\"}}");
        assert!(metric(&page, &series).unwrap_or(0.0) >= 1.0, "{series}");
    }
    assert_eq!(app.count("suppressions").await, 0);
    assert_eq!(app.count("events WHERE actor = 'inbound'").await, 0);
    let err = expect_err(lift(&app, "x@example.com").await);
    assert_reason(&err, Code::NotFound, "NOT_SUPPRESSED");
}

/// Every mail's envelope sender is the bounce address tagged with the mail's id, so a
/// bounce that quotes nothing else still names its mail.
async fn the_envelope_sender_is_the_bounce_address_tagged_with_the_mail(backend: Backend) {
    let (app, _) = app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    let (mail_id, _) = mail.message_id.split_once('@').expect("id@domain");
    let (local, domain) = BOUNCE.split_once('@').unwrap();
    assert_eq!(mail.from, format!("{local}+{mail_id}@{domain}"));
}

crate::on_both_backends!(
    the_envelope_sender_is_the_bounce_address_tagged_with_the_mail,
    a_postfix_bounce_marks_the_mail_bounced_and_suppresses_the_mailbox,
    an_ses_policy_bounce_bounces_the_mail_but_suppresses_nothing,
    an_exim_delay_matched_by_message_id_is_only_recorded,
    a_complaint_suppresses_the_mailbox_until_support_lifts_it,
    the_listener_is_no_relay_and_takes_what_it_cannot_read,
);
