//! Mail delivery through the outbox: nothing committed is ever lost, nothing is sent twice.

use std::time::Duration;

use emailverify::clock::ShiftedClock;

use crate::helpers::{
    Backend, Inbox, SmtpSink, eventually, fresh_database, spawn_app, spawn_app_with, start,
    test_settings,
};

const SIGN_UPS: usize = 200;

async fn two_hundred_sign_ups_while_smtp_is_down_all_arrive_once_it_is_back_none_twice(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |s| s.mail_retry_base = "100ms".into()).await;
    app.smtp.down();
    crate::helpers::sign_ups(std::slice::from_ref(&app.grpc), SIGN_UPS, SIGN_UPS).await;
    // The worker meets the closed port and pauses; an outage costs no mail an attempt.
    eventually(
        "the worker tried the closed port",
        Duration::from_secs(5),
        async || (app.count("outbox WHERE last_error IS NOT NULL").await > 0).then_some(()),
    )
    .await;
    assert_eq!(
        app.count("outbox WHERE state = 'pending' AND attempts = 0")
            .await,
        SIGN_UPS as i64
    );

    app.smtp.up();
    let mut inbox = Inbox::default();
    app.smtp.receive(&mut inbox, SIGN_UPS, &app.db_url).await;
    app.smtp.receive_stragglers(&mut inbox).await;
    assert_eq!(inbox.mails.len(), SIGN_UPS);
    assert_eq!(inbox.duplicates(), 0, "a mail went out twice");
    app.eventually_count(
        "outbox WHERE state = 'sent' AND sealed_link IS NULL",
        SIGN_UPS as i64,
    )
    .await;
}

async fn transient_smtp_replies_are_retried_until_the_mail_is_accepted(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.mail_retry_base = "50ms".into()).await;
    app.smtp.reply_next(&[
        "421 4.3.2 service shutting down",
        "451 4.3.0 try again later",
    ]);
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();

    let mail = app.next_mail().await;
    assert_eq!(mail.to, vec!["jane@example.com".to_string()]);
    app.assert_no_mail().await;
    app.eventually_count("outbox WHERE state = 'sent' AND attempts = 3", 1)
        .await;
    assert_eq!(
        app.count("events WHERE event_type = 'mail_delivery_failed'")
            .await,
        2
    );
}

async fn a_permanent_smtp_refusal_makes_the_mail_dead_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.smtp.reply_next(&["550 5.1.1 no such user here"]);
    app.request_verification("user-1", "nobody@example.com")
        .await
        .unwrap();

    app.eventually_count(
        "outbox WHERE state = 'dead' AND attempts = 1 AND sealed_link IS NULL",
        1,
    )
    .await;
    assert_eq!(
        app.count("events WHERE event_type = 'mail_dead' AND detail LIKE '%550%'")
            .await,
        1
    );
    app.assert_no_mail().await;
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
    let first_base = app.http_base.clone();
    let (db, smtp) = app.stop().await;

    smtp.up();
    let app = start(db, smtp, settings, clock).await;
    let mail = app.next_mail().await;
    assert_eq!(mail.to, vec!["jane@example.com".to_string()]);
    // The link minted by the first process (its port) works in the second (another port).
    app.confirm(&mail.token(&first_base)).await.unwrap();
    app.assert_no_mail().await;
}

async fn a_mail_that_keeps_failing_is_dead_after_the_last_attempt_and_its_link_erased(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |s| {
        s.mail_max_attempts = "2".into();
        s.mail_retry_base = "50ms".into();
    })
    .await;
    app.smtp
        .reply_next(&["451 4.3.0 try again later", "452 4.2.2 mailbox full"]);
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();

    app.eventually_count(
        "outbox WHERE state = 'dead' AND attempts = 2 AND sealed_link IS NULL",
        1,
    )
    .await;
    assert_eq!(app.count("events WHERE event_type = 'mail_dead'").await, 1);
    assert_eq!(
        app.count("events WHERE event_type = 'mail_delivery_failed'")
            .await,
        1
    );
    app.assert_no_mail().await;
}

/// An outage longer than the attempts allow kills no mail: the worker keeps trying (the sink
/// counts each try) without spending the mail's attempts, and the mail goes out once the
/// server answers.
async fn a_long_smtp_outage_kills_no_mail(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.mail_max_attempts = "2".into();
        s.mail_retry_base = "20ms".into();
    })
    .await;
    app.smtp.drop_connections();
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();

    // Many more tries than the attempt limit allows.
    let tries = 6;
    eventually(
        "the worker keeps trying the server",
        Duration::from_secs(20),
        async || (app.smtp.dropped_connections() >= tries).then_some(()),
    )
    .await;
    assert_eq!(
        app.count("outbox WHERE state = 'pending' AND attempts = 0 AND last_error IS NOT NULL")
            .await,
        1,
        "tried, and no attempt spent"
    );

    app.smtp.up();
    assert_eq!(
        app.next_mail().await.to,
        vec!["jane@example.com".to_string()]
    );
    app.eventually_count("outbox WHERE state = 'sent' AND attempts = 1", 1)
        .await;
    assert_eq!(app.count("outbox WHERE state = 'dead'").await, 0);
    assert_eq!(app.count("events WHERE event_type = 'mail_dead'").await, 0);
}

/// A slow relay makes a round of sends outlast the mail lease: the worker keeps its claims
/// while it sends and until it marks them sent, so no mail of the round is claimed and sent
/// again by its other rounds (or another process) meanwhile.
async fn rounds_slower_than_the_lease_send_each_mail_once(backend: Backend) {
    const MAILS: usize = 120;
    let app = spawn_app_with(backend, |s| s.mail_lease = "3s".into()).await;
    // 120 mails through 16 connections at 1.2 s each: about 9 s of sends, three rounds of
    // 32 at once, each round well over the 3 s lease. (A lease this long leaves a renewal
    // 2 s to be late on a busy machine before a claim would run out.)
    app.smtp.accept_after(Duration::from_millis(1200));
    crate::helpers::sign_ups(std::slice::from_ref(&app.grpc), MAILS, MAILS).await;
    let mut inbox = Inbox::default();
    app.smtp.receive(&mut inbox, MAILS, &app.db_url).await;
    app.smtp.receive_stragglers(&mut inbox).await;
    assert_eq!(inbox.duplicates(), 0, "a mail went out twice");
    assert_eq!(inbox.mails.len(), MAILS);
    app.eventually_count("outbox WHERE state = 'sent'", MAILS as i64)
        .await;
}

crate::on_both_backends!(
    rounds_slower_than_the_lease_send_each_mail_once,
    a_long_smtp_outage_kills_no_mail,
    a_mail_that_keeps_failing_is_dead_after_the_last_attempt_and_its_link_erased,
    two_hundred_sign_ups_while_smtp_is_down_all_arrive_once_it_is_back_none_twice,
    transient_smtp_replies_are_retried_until_the_mail_is_accepted,
    a_permanent_smtp_refusal_makes_the_mail_dead_at_once,
    a_mail_queued_before_a_restart_is_sent_by_the_next_process,
);
