//! What the support console refuses, on the real server: the console when it is off, an
//! anonymous agent, a wrong token (and too many of them, per name and per client), a form
//! without the session's CSRF token, and a POST another site sent — each refused with
//! nothing changed.

use reqwest::StatusCode;

use crate::helpers::{Backend, TestApp, spawn_app};
use crate::support::{Agent, HEADER, Mode, bounced_customer, console_app};

/// What an action would change: the user's events, the suppressions, the pending flow.
async fn state(app: &TestApp) -> (i64, i64, i64) {
    (
        app.count("events").await,
        app.count("suppressions").await,
        app.count("flows WHERE state = 'pending'").await,
    )
}

async fn the_console_is_off_unless_it_is_set(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in ["/support/", "/support/customer?id=user-1", "/support"] {
        assert_eq!(app.admin_get(path).await.status(), 404, "{path}");
    }
    assert_eq!(app.admin_get("/healthz").await.status(), 200);
}

async fn anonymous_and_wrong_agents_are_refused_and_change_nothing(backend: Backend) {
    let app = console_app(backend, Mode::Tokens).await;
    bounced_customer(&app, "user-1").await;
    let before = state(&app).await;
    let mut anon = Agent::new(&app);
    let page = anon.get("/support/customer?id=user-1").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(!page.body.contains("googlemail"), "{}", page.body);
    let form = [
        ("csrf", "x"),
        ("id", "user-1"),
        ("action", "lift"),
        ("addr", "0"),
        ("reason", "no session"),
    ];
    assert_eq!(
        anon.post("/support/act", &form, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A cookie the console never gave.
    anon.cookie = Some(format!("ev_support={}", "A".repeat(43)));
    assert_eq!(
        anon.post("/support/act", &form, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Wrong token; a name that is not an agent's.
    for (name, token) in [
        ("alice", "wrong-token-wrong-token"),
        ("mallory", "correct-horse-battery-staple"),
    ] {
        let wrong = anon
            .post("/support/sign-in", &[("name", name), ("token", token)], &[])
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{name}");
        assert!(wrong.body.contains("do not match"));
        assert!(!wrong.headers.contains_key("set-cookie"));
    }
    // A sign-in that another site posted.
    let forged = anon
        .post(
            "/support/sign-in",
            &[("name", "alice"), ("token", "correct-horse-battery-staple")],
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(state(&app).await, before);
    let metrics = app.metrics().await;
    for reason in ["anonymous", "wrong_token", "cross_site"] {
        assert!(
            metrics.contains(&format!(
                "emailverify_support_refused_total{{reason=\"{reason}\"}}"
            )),
            "{reason}"
        );
    }

    // The proxy's mode: no header, or one that names no one, is refused.
    let app = console_app(backend, Mode::Header).await;
    let mut anon = Agent::new(&app);
    assert_eq!(anon.get("/support/").await.status, StatusCode::UNAUTHORIZED);
    anon.header = Some("bad name!".into());
    assert_eq!(anon.get("/support/").await.status, StatusCode::UNAUTHORIZED);
    let _ = HEADER;
}

async fn a_form_without_the_sessions_csrf_token_or_from_another_site_does_nothing(
    backend: Backend,
) {
    let app = console_app(backend, Mode::Tokens).await;
    bounced_customer(&app, "user-1").await;
    let mut agent = Agent::new(&app);
    let csrf = agent
        .sign_in(Mode::Tokens, "alice", "correct-horse-battery-staple")
        .await;
    let mut other = Agent::new(&app);
    let other_csrf = other
        .sign_in(Mode::Tokens, "bob", "0123456789abcdef01")
        .await;
    let before = state(&app).await;
    let lift = |csrf: &'static str| {
        [
            ("csrf", csrf),
            ("id", "user-1"),
            ("action", "lift"),
            ("addr", "0"),
            ("reason", "trying"),
        ]
    };
    assert_eq!(
        agent.post("/support/act", &lift(""), &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let stolen: &'static str = Box::leak(other_csrf.into_boxed_str());
    assert_eq!(
        agent.post("/support/act", &lift(stolen), &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let ours: &'static str = Box::leak(csrf.into_boxed_str());
    for cross in [
        [("origin", "http://evil.example")],
        [("origin", "null")],
        [("sec-fetch-site", "cross-site")],
        [("sec-fetch-site", "same-site")],
    ] {
        let page = agent.post("/support/act", &lift(ours), &cross).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{cross:?}");
        assert!(page.body.contains("another site"));
    }
    assert_eq!(state(&app).await, before, "nothing changed");
    let metrics = app.metrics().await;
    assert!(metrics.contains("emailverify_support_refused_total{reason=\"csrf\"}"));
    // The same form, sent as our own page sends it, works.
    let origin = app.admin_base.clone();
    let page = agent
        .post(
            "/support/act",
            &lift(ours),
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(app.count("suppressions").await, 0);
    // Signed out, the session's token no longer works.
    agent
        .post("/support/sign-out", &[("csrf", ours)], &[])
        .await;
    assert!(agent.cookie.is_none());
}

async fn too_many_wrong_tokens_lock_the_name_and_the_client(backend: Backend) {
    let app = console_app(backend, Mode::Tokens).await;
    let mut agent = Agent::new(&app);
    for _ in 0..5 {
        let wrong = agent
            .post(
                "/support/sign-in",
                &[("name", "alice"), ("token", "guess-guess-guess")],
                &[],
            )
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    }
    // Now even the right token is refused for that name, but not for another agent.
    let right = agent
        .post(
            "/support/sign-in",
            &[("name", "alice"), ("token", "correct-horse-battery-staple")],
            &[],
        )
        .await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(right.headers.get("set-cookie").is_none());
    let bob = agent
        .post(
            "/support/sign-in",
            &[("name", "bob"), ("token", "0123456789abcdef01")],
            &[],
        )
        .await;
    assert_eq!(bob.status, StatusCode::SEE_OTHER);
    // One client guessing across many names is stopped too (20 a window).
    for i in 0..15 {
        let name = format!("guess{i}");
        agent
            .post(
                "/support/sign-in",
                &[("name", &name), ("token", "guess-guess-guess")],
                &[],
            )
            .await;
    }
    let bob = agent
        .post(
            "/support/sign-in",
            &[("name", "bob"), ("token", "0123456789abcdef01")],
            &[],
        )
        .await;
    assert_eq!(bob.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        app.metrics()
            .await
            .contains("emailverify_support_refused_total{reason=\"throttled\"}")
    );
}

crate::on_both_backends!(
    the_console_is_off_unless_it_is_set,
    anonymous_and_wrong_agents_are_refused_and_change_nothing,
    a_form_without_the_sessions_csrf_token_or_from_another_site_does_nothing,
    too_many_wrong_tokens_lock_the_name_and_the_client,
);
