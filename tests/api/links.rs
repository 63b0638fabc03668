//! One-time links: single use, expiry, resend, supersede, races, storage, and the pages.

use std::time::Duration;

use emailverify::grpc::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{Backend, assert_reason, expect_err, spawn_app};

mod round_three;

async fn opening_a_link_never_consumes_it(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    let link = app.link_in(&mail);

    // A mail scanner pre-fetching the link, twice.
    for _ in 0..2 {
        let page = app.http.get(&link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(
            html.contains(r#"action="/verify""#) && html.contains(r#"action="/cancel""#),
            "{html}"
        );
        assert!(html.contains("This wasn’t me"), "{html}");
    }

    assert!(!app.status("user-1").await.unwrap().email_verified);
    let ok = app.confirm(&app.token_in(&mail)).await.unwrap();
    assert_eq!(ok.outcome(), pb::Outcome::EmailVerified);
}

async fn pages_send_the_contracts_security_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let link = app.link_in(&app.next_mail().await);
    let unknown = format!("/verify?token={}", "A".repeat(43));
    for resp in [
        app.http.get(&link).send().await.unwrap(),
        app.get(&unknown).await,
    ] {
        let h = resp.headers();
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("style-src 'sha256-"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
    }
}

async fn a_link_works_once(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    app.confirm(&token).await.unwrap();

    assert_reason(
        &expect_err(app.confirm(&token).await),
        Code::FailedPrecondition,
        "TOKEN_USED",
    );
    assert_eq!(app.post_form("/verify", &token).await.status(), 409);
    assert_eq!(
        app.get(&format!("/verify?token={token}")).await.status(),
        409
    );
}

async fn an_expired_link_is_refused_over_grpc(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));

    assert_reason(
        &expect_err(app.confirm(&token).await),
        Code::FailedPrecondition,
        "TOKEN_EXPIRED",
    );
    assert!(!app.status("user-1").await.unwrap().email_verified);
}

async fn an_expired_link_page_offers_a_new_link_that_works(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));

    let get = app.get(&format!("/verify?token={token}")).await;
    assert_eq!(get.status(), 410);
    let post = app.post_form("/verify", &token).await;
    assert_eq!(post.status(), 410);
    let html = post.text().await.unwrap();
    assert!(
        html.contains(r#"action="/resend""#) && html.contains("Send me a new link"),
        "{html}"
    );

    let resent = app.post_form("/resend", &token).await;
    assert_eq!(resent.status(), 200);
    let fresh = app.token_in(&app.next_mail().await);
    assert_ne!(fresh, token);
    assert_eq!(app.post_form("/verify", &fresh).await.status(), 200);
    assert!(app.status("user-1").await.unwrap().email_verified);
}

async fn resend_waits_for_the_cooldown_then_replaces_the_link(backend: Backend) {
    let app = spawn_app(backend).await;
    let flow = app
        .request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let old = app.token_in(&app.next_mail().await);

    let err = expect_err(app.resend("user-1").await);
    assert_reason(&err, Code::ResourceExhausted, "RESEND_COOLDOWN");
    let retry = err
        .get_details_retry_info()
        .expect("RetryInfo")
        .retry_delay
        .unwrap();
    assert!(
        retry > Duration::from_secs(50) && retry <= Duration::from_secs(60),
        "{retry:?}"
    );
    app.assert_no_mail().await;

    app.clock.advance(Duration::from_secs(61));
    let again = app.resend("user-1").await.unwrap();
    assert_eq!(again.flow_id, flow.flow_id, "resend keeps the flow");
    let new = app.token_in(&app.next_mail().await);

    assert_reason(
        &expect_err(app.confirm(&old).await),
        Code::FailedPrecondition,
        "TOKEN_SUPERSEDED",
    );
    assert_eq!(
        app.confirm(&new).await.unwrap().outcome(),
        pb::Outcome::EmailVerified
    );
}

async fn when_several_token_states_apply_used_then_superseded_then_expired_wins(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let replaced = app.token_in(&app.next_mail().await);
    app.clock.advance(Duration::from_secs(61));
    app.resend("user-1").await.unwrap();
    let used = app.token_in(&app.next_mail().await);
    app.confirm(&used).await.unwrap();
    // Now both links are also past their expiry.
    app.clock.advance(Duration::from_secs(25 * 3600));

    assert_reason(
        &expect_err(app.confirm(&used).await),
        Code::FailedPrecondition,
        "TOKEN_USED",
    );
    assert_reason(
        &expect_err(app.confirm(&replaced).await),
        Code::FailedPrecondition,
        "TOKEN_SUPERSEDED",
    );
    // The pages agree, for a GET as for the POST: used 409, replaced 410.
    assert_eq!(app.post_form("/verify", &used).await.status(), 409);
    assert_eq!(
        app.get(&format!("/verify?token={used}")).await.status(),
        409
    );
    let page = app.post_form("/verify", &replaced).await;
    assert_eq!(page.status(), 410);
    // The flow is complete: a new link could only fail, so none is offered.
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("/resend") && !html.contains("/cancel"),
        "{html}"
    );
    assert_eq!(
        app.get(&format!("/verify?token={replaced}")).await.status(),
        410
    );
}

async fn resend_through_the_page_respects_the_cooldown(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);

    let resp = app.post_form("/resend", &token).await;
    assert_eq!(resp.status(), 429);
    let secs = crate::helpers::retry_after_secs(&resp);
    assert!((1..=60).contains(&secs), "{secs}");
}

async fn twenty_concurrent_confirmations_of_one_link_give_exactly_one_success(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);

    let attempts = (0..20).map(|_| {
        let (mut grpc, token) = (app.grpc.clone(), token.clone());
        tokio::spawn(async move { grpc.confirm_link(pb::ConfirmLinkRequest { token }).await })
    });
    let results: Vec<_> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let successes = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(successes, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_reason(r, Code::FailedPrecondition, "TOKEN_USED");
    }
}

async fn two_users_racing_for_one_address_end_with_one_winner(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("alice", "shared@example.com")
        .await
        .unwrap();
    app.request_verification("bob", "shared@example.com")
        .await
        .unwrap();
    let (m1, m2) = (app.next_mail().await, app.next_mail().await);
    let (t1, t2) = (app.token_in(&m1), app.token_in(&m2));

    let (mut g1, mut g2) = (app.grpc.clone(), app.grpc.clone());
    let (r1, r2) = tokio::join!(
        g1.confirm_link(pb::ConfirmLinkRequest { token: t1 }),
        g2.confirm_link(pb::ConfirmLinkRequest { token: t2 }),
    );

    let outcomes = [r1.is_ok(), r2.is_ok()];
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{outcomes:?}");
    let loser = match (r1, r2) {
        (Ok(_), Err(lost)) | (Err(lost), Ok(_)) => lost,
        other => panic!("not one winner: {other:?}"),
    };
    assert_reason(&loser, Code::AlreadyExists, "EMAIL_TAKEN");
    let verified = [
        app.status("alice").await.unwrap().email_verified,
        app.status("bob").await.unwrap().email_verified,
    ];
    assert_eq!(verified.iter().filter(|v| **v).count(), 1);
}

async fn the_raw_token_is_nowhere_in_the_database(backend: Backend) {
    let app = spawn_app(backend).await;
    // Hold the mail in the outbox first, to look at the database while it waits.
    app.smtp.down();
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let while_queued = app.dump_database().await;
    app.smtp.up();
    let token = app.token_in(&app.next_mail().await);

    assert!(
        !while_queued.contains(&token),
        "the token is stored in clear"
    );
    assert!(
        !while_queued.contains("verify?token="),
        "a link is stored in clear"
    );
    assert!(
        while_queued.contains("sealed_link: Some("),
        "the queued mail keeps its link sealed"
    );
    // Once the mail is handed to SMTP, even the sealed copy is erased.
    app.eventually_count("outbox WHERE state = 'pending'", 0)
        .await;
    let after = app.dump_database().await;
    assert!(!after.contains(&token));
    assert!(!after.contains("sealed_link: Some("), "{after}");
}

async fn this_was_not_me_cancels_the_flow_even_after_the_link_expired(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "old@example.com").await;
    app.request_change("user-1", "attacker@example.org")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    app.clock.advance(Duration::from_secs(3601));

    let resp = app.post_form("/cancel", &token).await;
    assert_eq!(resp.status(), 200);
    assert!(app.status("user-1").await.unwrap().pending.is_none());
    assert_eq!(app.status("user-1").await.unwrap().email, "old@example.com");
    // The flow is gone: cancelling again or asking for a new link says so.
    assert_eq!(app.post_form("/cancel", &token).await.status(), 410);
    assert_eq!(app.post_form("/resend", &token).await.status(), 410);
}

async fn unknown_and_malformed_links_get_their_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    let unknown = "A".repeat(43);
    assert_eq!(
        app.get(&format!("/verify?token={unknown}")).await.status(),
        404
    );
    assert_eq!(app.post_form("/verify", &unknown).await.status(), 404);
    assert_eq!(app.get("/verify?token=short").await.status(), 400);
    // Without a token (a result page reopened): where the link is, not an error.
    let page = app.get("/verify").await;
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Open the link from your email")
    );
    assert_eq!(app.post_form("/verify", "short").await.status(), 400);
}

crate::on_both_backends!(
    opening_a_link_never_consumes_it,
    pages_send_the_contracts_security_headers,
    a_link_works_once,
    an_expired_link_is_refused_over_grpc,
    an_expired_link_page_offers_a_new_link_that_works,
    resend_waits_for_the_cooldown_then_replaces_the_link,
    resend_through_the_page_respects_the_cooldown,
    when_several_token_states_apply_used_then_superseded_then_expired_wins,
    twenty_concurrent_confirmations_of_one_link_give_exactly_one_success,
    two_users_racing_for_one_address_end_with_one_winner,
    the_raw_token_is_nowhere_in_the_database,
    this_was_not_me_cancels_the_flow_even_after_the_link_expired,
    unknown_and_malformed_links_get_their_pages,
);
