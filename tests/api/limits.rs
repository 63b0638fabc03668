//! Rate limits and lockout: per user, per recipient address (whatever the account), and
//! per client IP on the link pages. Refusals carry RetryInfo / Retry-After.

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{Backend, assert_reason, expect_err, spawn_app_with};

async fn a_user_gets_a_bounded_number_of_requests_and_resends(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.limit_per_user = "3/1h".into();
        s.resend_cooldown = "0s".into();
    })
    .await;
    app.request_verification("user-1", "a@example.com")
        .await
        .unwrap();
    app.request_verification("user-1", "b@example.com")
        .await
        .unwrap();
    app.resend("user-1").await.unwrap();

    let err = expect_err(app.resend("user-1").await);
    assert_reason(&err, Code::ResourceExhausted, "RATE_LIMITED");
    let retry = err.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(
        retry > Duration::from_secs(19 * 60) && retry <= Duration::from_secs(20 * 60),
        "{retry:?}"
    );
    assert_reason(
        &expect_err(app.request_verification("user-1", "c@example.com").await),
        Code::ResourceExhausted,
        "RATE_LIMITED",
    );
    // Another user is not affected.
    app.request_verification("user-2", "d@example.com")
        .await
        .unwrap();

    app.clock.advance(retry);
    app.request_verification("user-1", "c@example.com")
        .await
        .unwrap();
    // Refusals are recorded just after their answer.
    crate::helpers::eventually("a rate_limited event", Duration::from_secs(5), async || {
        let events = app.events("user-1", 50, "").await.ok()?.events;
        events
            .iter()
            // Repeats within a minute are one event with a count: "RATE_LIMITED ×2".
            .any(|e| e.r#type == "rate_limited" && e.detail.starts_with("RATE_LIMITED"))
            .then_some(())
    })
    .await;
}

async fn an_inbox_cannot_be_bombed_through_many_accounts(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.limit_per_recipient = "2/1h".into()).await;
    app.request_verification("attacker-1", "victim@example.com")
        .await
        .unwrap();
    app.request_verification("attacker-2", "victim@EXAMPLE.com")
        .await
        .unwrap();
    let err = expect_err(
        app.request_verification("attacker-3", "victim@example.com")
            .await,
    );
    assert_reason(&err, Code::ResourceExhausted, "RATE_LIMITED");
    assert!(err.get_details_retry_info().unwrap().retry_delay.is_some());

    app.next_mail().await;
    app.next_mail().await;
    app.assert_no_mail().await;
    assert!(
        app.status("attacker-3").await.is_err(),
        "the refused request wrote nothing"
    );
    // Other inboxes are not affected.
    app.request_verification("attacker-3", "other@example.com")
        .await
        .unwrap();
}

/// Probing for taken addresses costs quota: each EMAIL_TAKEN counts against the user, and
/// past the limit the answer is RATE_LIMITED, for a taken address as for a free one (it
/// no longer tells which addresses are taken).
async fn probing_for_taken_addresses_costs_quota(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.limit_per_user = "3/1h".into()).await;
    app.verified_user("owner", "taken@example.com").await;
    for _ in 0..3 {
        assert_reason(
            &expect_err(
                app.request_verification("prober", "taken@example.com")
                    .await,
            ),
            Code::AlreadyExists,
            "EMAIL_TAKEN",
        );
    }
    for email in ["taken@example.com", "free@example.com"] {
        assert_reason(
            &expect_err(app.request_verification("prober", email).await),
            Code::ResourceExhausted,
            "RATE_LIMITED",
        );
    }
}

async fn a_resend_with_nothing_pending_costs_no_quota(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.limit_per_user = "2/1h".into()).await;
    app.verified_user("user-1", "jane@example.com").await;
    // A known user with nothing pending gets what an unknown user gets, however often:
    // NO_PENDING_FLOW, never RATE_LIMITED (which would tell the two apart).
    for user in ["user-1", "nobody"] {
        for _ in 0..4 {
            assert_reason(
                &expect_err(app.resend(user).await),
                Code::FailedPrecondition,
                "NO_PENDING_FLOW",
            );
        }
    }
    // And the user's quota is still there for a real request.
    app.request_change("user-1", "new@example.com")
        .await
        .unwrap();
}

async fn a_client_that_keeps_failing_on_the_link_pages_is_locked_out(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.limit_failed_confirms_per_ip = "3/10m".into()).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    let unknown = "A".repeat(43);

    // Opening stale or unknown links (a mail scanner does) changes nothing, not even the
    // client's failure count.
    for _ in 0..5 {
        let resp = app.get(&format!("/verify?token={unknown}")).await;
        assert_eq!(resp.status(), 404);
    }
    for _ in 0..3 {
        assert_eq!(app.post_form("/verify", &unknown).await.status(), 404);
    }
    // Locked out now: even a valid link is refused, on every page, with Retry-After.
    for resp in [
        app.post_form("/verify", &token).await,
        app.get(&format!("/verify?token={token}")).await,
        app.post_form("/resend", &token).await,
    ] {
        assert_eq!(resp.status(), 429);
        let secs = crate::helpers::retry_after_secs(&resp);
        assert!((1..=200).contains(&secs), "{secs}");
    }
    assert!(!app.status("user-1").await.unwrap().email_verified);

    app.clock.advance(Duration::from_secs(10 * 60));
    assert_eq!(app.post_form("/verify", &token).await.status(), 200);
}

/// Only what could be guessing counts against a client (release 3): a used, superseded or
/// expired link pressed again — the back button, a reload, people behind one carrier NAT
/// — is answered with its page every time, never 429. Unknown tokens still count.
async fn pressing_a_real_link_again_never_counts_against_the_client(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.limit_failed_confirms_per_ip = "3/10m".into();
        s.resend_cooldown = "0s".into();
    })
    .await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let first = app.token_in(&app.next_mail().await);
    app.resend("user-1").await.unwrap();
    let second = app.token_in(&app.next_mail().await);
    assert_eq!(app.post_form("/verify", &second).await.status(), 200);
    for _ in 0..30 {
        assert_eq!(
            app.post_form("/verify", &second).await.status(),
            409,
            "used"
        );
        assert_eq!(
            app.post_form("/verify", &first).await.status(),
            410,
            "superseded"
        );
        assert_eq!(
            app.post_form("/cancel", &second).await.status(),
            410,
            "finished"
        );
    }
    app.request_verification("user-2", "joe@example.com")
        .await
        .unwrap();
    let expiring = app.token_in(&app.next_mail().await);
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    for _ in 0..30 {
        assert_eq!(
            app.post_form("/verify", &expiring).await.status(),
            410,
            "expired"
        );
    }
    // The guard is on: three unknown tokens lock the client out.
    let unknown = "A".repeat(43);
    for _ in 0..3 {
        assert_eq!(app.post_form("/verify", &unknown).await.status(), 404);
    }
    assert_eq!(app.post_form("/verify", &second).await.status(), 429);
}

/// Precedence (release 3): a suppressed inbox answers ADDRESS_UNDELIVERABLE before any
/// cooldown or limit — waiting would not help, so RESEND_COOLDOWN or RATE_LIMITED would
/// send the caller the wrong way — and sends nothing.
async fn a_suppressed_inbox_is_undeliverable_before_any_cooldown_or_limit(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.limit_per_user = "2/1h".into();
        s.mail_retry_base = "1h".into();
    })
    .await;
    app.smtp.reply_next(&["550 5.1.1 no such user"]);
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    app.eventually_count("suppressions", 1).await;
    // Within the cooldown (60 s) of the link just sent:
    let err = expect_err(app.resend("user-1").await);
    assert_reason(&err, Code::FailedPrecondition, "ADDRESS_UNDELIVERABLE");
    // And past the per-user limit (2/h: the request and that resend are counted):
    for _ in 0..3 {
        let err = expect_err(app.resend("user-1").await);
        assert_reason(&err, Code::FailedPrecondition, "ADDRESS_UNDELIVERABLE");
        let err = expect_err(app.request_verification("user-1", "jane@example.com").await);
        assert_reason(&err, Code::FailedPrecondition, "ADDRESS_UNDELIVERABLE");
    }
    // The limit is in force: another address is RATE_LIMITED.
    let err = expect_err(app.request_verification("user-1", "joe@example.com").await);
    assert_reason(&err, Code::ResourceExhausted, "RATE_LIMITED");
    app.assert_no_mail().await;
    // A verified user over the limit asking to change to the suppressed address: the same.
    app.verified_user("user-3", "joe3@example.com").await;
    for _ in 0..3 {
        let _ = app.request_change("user-3", "other3@example.com").await;
    }
    let err = expect_err(app.request_change("user-3", "jane@example.com").await);
    assert_reason(&err, Code::FailedPrecondition, "ADDRESS_UNDELIVERABLE");
}

async fn a_trusted_proxy_header_names_the_client(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.limit_failed_confirms_per_ip = "1/10m".into();
        s.trusted_proxies = "1".into();
    })
    .await;
    let unknown = "A".repeat(43);
    let post = |ip: &'static str| {
        app.http
            .post(format!("{}/verify", app.http_base))
            .header("x-forwarded-for", format!("198.51.100.7, {ip}"))
            .form(&[("token", unknown.as_str())])
            .send()
    };
    assert_eq!(post("203.0.113.1").await.unwrap().status(), 404);
    assert_eq!(post("203.0.113.1").await.unwrap().status(), 429);
    assert_eq!(
        post("203.0.113.2").await.unwrap().status(),
        404,
        "another client is not locked out"
    );
}

crate::on_both_backends!(
    a_user_gets_a_bounded_number_of_requests_and_resends,
    an_inbox_cannot_be_bombed_through_many_accounts,
    probing_for_taken_addresses_costs_quota,
    a_resend_with_nothing_pending_costs_no_quota,
    a_client_that_keeps_failing_on_the_link_pages_is_locked_out,
    pressing_a_real_link_again_never_counts_against_the_client,
    a_suppressed_inbox_is_undeliverable_before_any_cooldown_or_limit,
    a_trusted_proxy_header_names_the_client,
);
