//! The audit trail (ListEvents) and the "this wasn't me" report that freezes changes.

use std::time::Duration;

use emailverify::grpc::pb;
use futures::StreamExt;

use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{Backend, TestApp, assert_reason, eventually, expect_err, spawn_app};

/// The user's trail once it holds an event of `event_type` with `detail` (refusals are
/// recorded right after their answer, off its path).
async fn trail_with(app: &TestApp, user: &str, event_type: &str, detail: &str) -> Vec<pb::Event> {
    eventually(
        &format!("a {event_type} {detail} event"),
        Duration::from_secs(5),
        async || {
            let events = app.events(user, 200, "").await.ok()?.events;
            events
                .iter()
                .any(|e| e.r#type == event_type && e.detail == detail)
                .then_some(events)
        },
    )
    .await
}

async fn reporting_a_change_cancels_it_and_freezes_changes_for_a_day(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "owner@example.com").await;
    app.request_change("user-1", "attacker@example.org")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);

    assert_eq!(app.post_form("/cancel", &token).await.status(), 200);

    let err = expect_err(app.request_change("user-1", "attacker@example.org").await);
    assert_reason(&err, Code::FailedPrecondition, "CHANGE_FROZEN");
    let until = err.get_details_error_info().unwrap().metadata["until"].clone();
    let until = humantime::parse_rfc3339(&until).expect("`until` is an RFC 3339 time");
    let ahead = until.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(
        ahead > Duration::from_secs(23 * 3600) && ahead <= Duration::from_secs(24 * 3600),
        "{ahead:?}"
    );
    app.assert_no_mail().await;

    // A refusal is recorded just after its answer.
    let events = trail_with(&app, "user-1", "request_refused", "CHANGE_FROZEN").await;
    assert!(
        events.iter().any(|e| e.r#type == "change_reported"),
        "{events:?}"
    );

    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    app.request_change("user-1", "new@example.org")
        .await
        .expect("the freeze ends");
}

async fn a_cancel_by_the_caller_or_of_a_verification_does_not_freeze(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "owner@example.com").await;
    app.request_change("user-1", "new@example.org")
        .await
        .unwrap();
    app.next_mail().await;
    app.cancel("user-1").await.unwrap();
    app.request_change("user-1", "new@example.org")
        .await
        .expect("a caller's cancel does not freeze");
    app.next_mail().await;

    app.request_verification("user-2", "two@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    assert_eq!(app.post_form("/cancel", &token).await.status(), 200);
    app.request_change("user-2", "two@example.com")
        .await
        .expect("no freeze for a verification");
}

async fn the_trail_tells_support_what_happened_newest_first_and_masked(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "jane.doe@example.com").await;
    app.request_change("user-1", "jane.new@example.org")
        .await
        .unwrap();
    let first = app.next_mail().await;
    let code = first.code();
    let wrong = format!("{:06}", (code.parse::<u32>().unwrap() + 1) % 1_000_000);
    expect_err(app.confirm_code("user-1", &wrong).await);
    app.confirm(&app.token_in(&first)).await.unwrap();
    let second = app.next_mail().await;
    app.confirm(&app.token_in(&second)).await.unwrap();
    app.next_mail().await; // the notice
    expect_err(app.request_change("user-1", "jane.new@example.org").await); // SAME_EMAIL
    // Let the worker record the notice's delivery, and the refusal be recorded.
    app.eventually_count("events WHERE event_type = 'mail_sent'", 4)
        .await;
    trail_with(&app, "user-1", "request_refused", "SAME_EMAIL").await;

    let all = app.events("user-1", 200, "").await.unwrap();
    assert!(all.next_page_token.is_empty());
    let types: Vec<&str> = all.events.iter().map(|e| e.r#type.as_str()).collect();
    for expected in [
        "verification_requested",
        "mail_sent",
        "email_verified",
        "change_requested",
        "code_mismatch",
        "current_confirmed",
        "email_changed",
        "request_refused",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    // Newest first.
    let times: Vec<i64> = all.events.iter().map(|e| e.at.unwrap().seconds).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert_eq!(types[0], "request_refused");
    // Masked addresses only, never a token or a code.
    let secrets = [
        app.token_in(&first),
        app.token_in(&second),
        code.clone(),
        "jane.doe@example.com".into(),
        "jane.new@example.org".into(),
    ];
    for e in &all.events {
        assert!(
            e.masked_address.is_empty() || e.masked_address.contains("***@"),
            "{e:?}"
        );
        for s in &secrets {
            assert!(!format!("{e:?}").contains(s.as_str()), "{e:?} leaks {s}");
        }
    }

    // Pages of 3 walk the same trail, without gaps or repeats.
    let (mut seen, mut token, mut ended) = (Vec::new(), String::new(), false);
    // At most one page more than the trail needs: a cursor that never ends fails below.
    for _ in 0..all.events.len() / 3 + 2 {
        let page = app.events("user-1", 3, &token).await.unwrap();
        assert!(page.events.len() <= 3);
        seen.extend(
            page.events
                .into_iter()
                .map(|e| (e.r#type, e.at.unwrap().seconds, e.at.unwrap().nanos)),
        );
        if page.next_page_token.is_empty() {
            ended = true;
            break;
        }
        token = page.next_page_token;
    }
    assert!(ended, "the pages never end");
    assert_eq!(seen.len(), all.events.len());
    let walked: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(walked, types);
}

async fn list_events_refuses_bad_input_and_unknown_users(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "jane@example.com").await;
    let err = expect_err(app.events("user-1", 10, "not-a-cursor!").await);
    assert_reason(&err, Code::InvalidArgument, "INVALID_PAGE_TOKEN");
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "page_token"
    );
    assert_reason(
        &expect_err(app.events("", 10, "").await),
        Code::InvalidArgument,
        "INVALID_USER_ID",
    );
    assert_reason(
        &expect_err(app.events("nobody", 10, "").await),
        Code::NotFound,
        "USER_NOT_FOUND",
    );
}

async fn events_record_the_caller_and_the_request_id(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut req = tonic::Request::new(emailverify::grpc::pb::RequestVerificationRequest {
        user_id: "user-1".into(),
        email: "jane@example.com".into(),
        locale: String::new(),
    });
    req.metadata_mut()
        .insert("x-request-id", "req-abc-123".parse().unwrap());
    app.grpc.clone().request_verification(req).await.unwrap();
    let token = app.token_in(&app.next_mail().await);
    app.post_form("/verify", &token).await;

    assert_eq!(
        app.count("events WHERE event_type = 'verification_requested' AND actor = 'api' AND request_id = 'req-abc-123'").await,
        1
    );
    assert_eq!(
        app.count("events WHERE event_type = 'email_verified' AND actor = 'link-page'")
            .await,
        1
    );
    app.eventually_count(
        "events WHERE event_type = 'mail_sent' AND actor = 'mail-worker'",
        1,
    )
    .await;
}

/// Refusals that change nothing cannot flood the trail: the same refusal of the same user
/// is one row a minute with a count, and every refusal is counted.
async fn a_thousand_no_op_refusals_are_one_event_with_their_count(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "jane@example.com").await;
    let refusals = futures::stream::iter(0..1000)
        .map(|i| {
            let app = &app;
            async move {
                if i % 2 == 0 {
                    expect_err(app.resend("user-1").await)
                } else {
                    expect_err(app.cancel("user-1").await)
                }
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for err in &refusals {
        assert_reason(err, Code::FailedPrecondition, "NO_PENDING_FLOW");
    }
    eventually(
        "every refusal counted",
        Duration::from_secs(10),
        async || (refusals_counted(&app).await == 1000).then_some(()),
    )
    .await;
    let rows = app
        .count("events WHERE event_type = 'request_refused'")
        .await;
    // Recorded concurrently, behind the user's row lock: one row, however they race.
    assert_eq!(rows, 1, "{rows} rows for 1000 refusals in one minute");
    let trail = app.events("user-1", 200, "").await.unwrap().events;
    assert!(
        trail
            .iter()
            .any(|e| e.r#type == "request_refused" && e.detail.starts_with("NO_PENDING_FLOW ×")),
        "{trail:?}"
    );
    // A minute later the same refusal starts a new row.
    app.clock.advance(Duration::from_secs(61));
    expect_err(app.resend("user-1").await);
    eventually(
        "a new row after the minute",
        Duration::from_secs(5),
        async || {
            let now = app
                .count("events WHERE event_type = 'request_refused'")
                .await;
            (now == rows + 1).then_some(())
        },
    )
    .await;
}

/// The NO_PENDING_FLOW refusals the trail counts (rows × their repeats).
async fn refusals_counted(app: &TestApp) -> i64 {
    use sea_orm::ConnectionTrait;
    let sql = "SELECT CAST(COALESCE(SUM(repeats), 0) AS BIGINT) AS n FROM events \
               WHERE event_type = 'request_refused' AND detail = 'NO_PENDING_FLOW'";
    let row = app
        .db
        .query_one_raw(sea_orm::Statement::from_string(
            app.db.get_database_backend(),
            sql,
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

crate::on_both_backends!(
    a_thousand_no_op_refusals_are_one_event_with_their_count,
    reporting_a_change_cancels_it_and_freezes_changes_for_a_day,
    a_cancel_by_the_caller_or_of_a_verification_does_not_freeze,
    the_trail_tells_support_what_happened_newest_first_and_masked,
    list_events_refuses_bad_input_and_unknown_users,
    events_record_the_caller_and_the_request_id,
);
