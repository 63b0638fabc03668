//! Mail delivery through the outbox: nothing committed is ever lost, nothing is sent twice.

use std::collections::HashSet;

use emailverify::core::clock::ShiftedClock;

use crate::helpers::smtp::SmtpSink;
use crate::helpers::{Backend, fresh_database, spawn_app, start, test_settings};

async fn mail_requested_while_smtp_is_down_arrives_once_it_is_back_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.smtp.down();
    for i in 0..5 {
        app.request_verification(&format!("user-{i}"), &format!("u{i}@example.com"))
            .await
            .unwrap();
    }
    // Let the worker fail a few times against the closed port.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert!(app.count("outbox WHERE state = 'pending'").await == 5);
    assert!(
        app.count("outbox WHERE attempts > 0").await >= 1,
        "the worker did try"
    );

    app.smtp.up();
    let mut ids = HashSet::new();
    for _ in 0..5 {
        let mail = app.next_mail().await;
        assert!(
            ids.insert(mail.message_id.clone()),
            "duplicate {}",
            mail.message_id
        );
    }
    app.assert_no_mail().await;
    assert_eq!(ids.len(), 5);
}

async fn a_mail_queued_before_a_restart_is_sent_by_the_next_process(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let settings = test_settings(&db, &smtp);
    let clock = ShiftedClock::default();
    smtp.down();
    let app = start(db, smtp.clone(), settings.clone(), clock.clone()).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let (db, smtp) = app.stop().await;

    smtp.up();
    let app = start(db, smtp, settings, clock).await;
    let mail = app.next_mail().await;
    assert_eq!(mail.to, vec!["jane@example.com".to_string()]);
    // The link minted by the first process works in the second (whose port differs).
    let token = mail
        .text
        .split("token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    app.confirm(token).await.unwrap();
    app.assert_no_mail().await;
}

async fn a_mail_that_keeps_failing_is_dead_after_the_last_attempt_and_its_link_erased(
    backend: Backend,
) {
    let app = crate::helpers::spawn_app_with(backend, |s| {
        s.mail_max_attempts = "2".into();
        s.mail_retry_base = "50ms".into();
    })
    .await;
    app.smtp.down();
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();

    let mut dead = false;
    for _ in 0..100 {
        if app.count("outbox WHERE state = 'dead'").await == 1 {
            dead = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(dead, "the mail never died");
    assert_eq!(
        app.count("outbox WHERE attempts = 2 AND sealed_link IS NULL")
            .await,
        1
    );
    assert_eq!(app.count("events WHERE event_type = 'mail_dead'").await, 1);
    assert_eq!(
        app.count("events WHERE event_type = 'mail_delivery_failed'")
            .await,
        1
    );
    app.smtp.up();
    app.assert_no_mail().await;
}

crate::on_both_backends!(
    a_mail_that_keeps_failing_is_dead_after_the_last_attempt_and_its_link_erased,
    mail_requested_while_smtp_is_down_arrives_once_it_is_back_exactly_once,
    a_mail_queued_before_a_restart_is_sent_by_the_next_process,
);
