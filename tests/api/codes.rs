//! One-time codes (ConfirmCode): the same mail's 6 digits confirm the step; wrong codes
//! count per flow and the 5th locks its codes for 15 minutes, across restarts; the code
//! that reached the lock stays dead after it; wrong codes also count per user across flows
//! (10 a day by default), and erasure does not give them back.

use std::time::Duration;

use emailverify::clock::ShiftedClock;
use emailverify::grpc::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{
    Backend, SmtpSink, assert_reason, expect_err, fresh_database, spawn_app, start, test_settings,
};

/// A code that is not `right` (codes are uniform over 000000..=999999).
fn wrong(right: &str) -> String {
    let n: u32 = right.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

async fn the_code_in_the_mail_confirms_the_step_like_the_link(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    let code = mail.code();
    assert!(
        mail.html.contains(&code),
        "the HTML part carries the code too"
    );

    let ok = app.confirm_code("user-1", &code).await.unwrap();
    assert_eq!(ok.outcome(), pb::Outcome::EmailVerified);
    assert_eq!(ok.email, "jane@example.com");
    // The code consumed the mail's token: its link is used now.
    assert_reason(
        &expect_err(app.confirm(&app.token_in(&mail)).await),
        Code::FailedPrecondition,
        "TOKEN_USED",
    );
}

async fn codes_work_for_both_steps_of_a_change(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "old@example.com").await;
    app.request_change("user-1", "new@example.org")
        .await
        .unwrap();
    let first = app.next_mail().await.code();
    let step1 = app.confirm_code("user-1", &first).await.unwrap();
    assert_eq!(step1.outcome(), pb::Outcome::CurrentConfirmed);
    let second = app.next_mail().await;
    assert_eq!(second.to, vec!["new@example.org".to_string()]);
    let step2 = app.confirm_code("user-1", &second.code()).await.unwrap();
    assert_eq!(step2.outcome(), pb::Outcome::EmailChanged);
}

async fn four_wrong_codes_count_down_the_fifth_locks_and_that_code_stays_dead(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let code = app.next_mail().await.code();

    for left in (1..=4).rev() {
        let err = expect_err(app.confirm_code("user-1", &wrong(&code)).await);
        assert_reason(&err, Code::FailedPrecondition, "CODE_MISMATCH");
        assert_eq!(
            err.get_details_error_info().unwrap().metadata["attempts_left"],
            left.to_string()
        );
    }
    let err = expect_err(app.confirm_code("user-1", &wrong(&code)).await);
    assert_reason(&err, Code::ResourceExhausted, "LOCKED_OUT");
    assert_eq!(
        err.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(15 * 60))
    );
    // During the lock even the right code is refused.
    let err = expect_err(app.confirm_code("user-1", &code).await);
    assert_reason(&err, Code::ResourceExhausted, "LOCKED_OUT");
    let retry = err.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(
        retry <= Duration::from_secs(15 * 60) && retry > Duration::from_secs(14 * 60),
        "{retry:?}"
    );

    // After the lock the code that reached it is dead (release 3): five fresh guesses
    // every 15 minutes would go on for ever. Only a new code confirms.
    app.clock.advance(Duration::from_secs(15 * 60 + 1));
    assert_reason(
        &expect_err(app.confirm_code("user-1", &code).await),
        Code::ResourceExhausted,
        "LOCKED_OUT",
    );
    app.resend("user-1").await.unwrap();
    let new = app.next_mail().await.code();
    assert_eq!(
        app.confirm_code("user-1", &new).await.unwrap().outcome(),
        pb::Outcome::EmailVerified
    );
}

/// Wrong codes count per user across flows (`EMAILVERIFY_MAX_WRONG_CODES_PER_USER`,
/// 10/1d): new flows, resends and erasure buy no more guesses; then every code, the
/// right one included, is RATE_LIMITED, while the link of the mail still works.
async fn a_user_gets_ten_wrong_codes_a_day_across_flows_and_erasure(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut wrong_so_far = 0;
    // Four wrong codes on each of two flows, then erase the user and two more.
    for (round, address) in ["a@example.com", "b@example.com"].iter().enumerate() {
        app.request_verification("user-1", address).await.unwrap();
        let code = app.next_mail().await.code();
        for _ in 0..4 {
            let err = expect_err(app.confirm_code("user-1", &wrong(&code)).await);
            assert_reason(&err, Code::FailedPrecondition, "CODE_MISMATCH");
            wrong_so_far += 1;
        }
        assert_eq!(wrong_so_far, 4 * (round + 1));
    }
    app.grpc
        .clone()
        .erase_user(pb::EraseUserRequest {
            user_id: "user-1".into(),
        })
        .await
        .unwrap();
    app.request_verification("user-1", "c@example.com")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    let code = mail.code();
    for _ in 0..2 {
        let err = expect_err(app.confirm_code("user-1", &wrong(&code)).await);
        assert_reason(&err, Code::FailedPrecondition, "CODE_MISMATCH");
    }
    // Ten wrong codes spent: the right one is refused too, with when to try again.
    let err = expect_err(app.confirm_code("user-1", &code).await);
    assert_reason(&err, Code::ResourceExhausted, "RATE_LIMITED");
    let retry = err.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(
        retry > Duration::from_secs(3600) && retry <= Duration::from_secs(24 * 3600),
        "{retry:?}"
    );
    // The link (256 bits) is not a guess: it still confirms.
    let ok = app.confirm(&app.token_in(&mail)).await.unwrap();
    assert_eq!(ok.outcome(), pb::Outcome::EmailVerified);
}

/// Wrong codes sent all at once are each counted: every CODE_MISMATCH tells a different
/// number of attempts left, and no more than four are answered so. (Each use-case reads
/// the flow after the user's lock, not from a snapshot taken before it waited.)
async fn concurrent_wrong_codes_are_each_counted(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let code = app.next_mail().await.code();
    let guess = wrong(&code);
    let guesses = (0..12).map(|_| app.confirm_code("user-1", &guess));
    let answers = futures::future::join_all(guesses).await;
    let mut left: Vec<String> = Vec::new();
    for answer in answers {
        let err = expect_err(answer);
        let info = err.get_details_error_info().unwrap();
        match info.reason.as_str() {
            "CODE_MISMATCH" => left.push(info.metadata["attempts_left"].clone()),
            "LOCKED_OUT" | "RATE_LIMITED" => {}
            other => panic!("unexpected {other}: {err:?}"),
        }
    }
    let mut distinct = left.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        left.len(),
        "a wrong code went uncounted: {left:?}"
    );
    assert!(left.len() <= 4, "{left:?}");
}

async fn the_lock_and_the_count_survive_a_restart(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let settings = test_settings(&db, &smtp);
    let clock = ShiftedClock::default();
    let app = start(db, smtp, settings.clone(), clock.clone()).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let code = app.next_mail().await.code();
    for _ in 0..3 {
        expect_err(app.confirm_code("user-1", &wrong(&code)).await);
    }
    let (db, smtp) = app.stop().await;

    let settings_again = settings.clone();
    let app = start(db, smtp, settings, clock.clone()).await;
    let err = expect_err(app.confirm_code("user-1", &wrong(&code)).await);
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["attempts_left"],
        "1",
        "the count survived"
    );
    assert_reason(
        &expect_err(app.confirm_code("user-1", &wrong(&code)).await),
        Code::ResourceExhausted,
        "LOCKED_OUT",
    );
    let (db, smtp) = app.stop().await;

    // The lock itself survives a restart too.
    let app = start(db, smtp, settings_again, clock).await;
    assert_reason(
        &expect_err(app.confirm_code("user-1", &code).await),
        Code::ResourceExhausted,
        "LOCKED_OUT",
    );
}

async fn resend_issues_a_new_code_and_kills_the_old_one(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let old = app.next_mail().await.code();
    app.clock.advance(Duration::from_secs(61));
    app.resend("user-1").await.unwrap();
    let new = app.next_mail().await.code();

    if old != new {
        let err = expect_err(app.confirm_code("user-1", &old).await);
        assert_reason(&err, Code::FailedPrecondition, "CODE_MISMATCH");
    }
    assert_eq!(
        app.confirm_code("user-1", &new).await.unwrap().outcome(),
        pb::Outcome::EmailVerified
    );
}

async fn malformed_codes_and_nothing_pending_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    for bad in ["", "12345", "1234567", "12a456", " 123456"] {
        let err = expect_err(app.confirm_code("user-1", bad).await);
        // Release 2's reason (API.md, "New reasons"); it was INVALID_TOKEN before.
        assert_reason(&err, Code::InvalidArgument, "INVALID_CODE");
        assert_eq!(
            err.get_details_bad_request().unwrap().field_violations[0].field,
            "code"
        );
    }
    assert_reason(
        &expect_err(app.confirm_code("", "123456").await),
        Code::InvalidArgument,
        "INVALID_USER_ID",
    );
    assert_reason(
        &expect_err(app.confirm_code("nobody", "123456").await),
        Code::FailedPrecondition,
        "NO_PENDING_FLOW",
    );
    assert_eq!(app.count("users").await, 0);
}

async fn an_expired_step_refuses_its_code(backend: Backend) {
    let app = spawn_app(backend).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let code = app.next_mail().await.code();
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    assert_reason(
        &expect_err(app.confirm_code("user-1", &code).await),
        Code::FailedPrecondition,
        "TOKEN_EXPIRED",
    );
}

crate::on_both_backends!(
    the_code_in_the_mail_confirms_the_step_like_the_link,
    codes_work_for_both_steps_of_a_change,
    four_wrong_codes_count_down_the_fifth_locks_and_that_code_stays_dead,
    a_user_gets_ten_wrong_codes_a_day_across_flows_and_erasure,
    concurrent_wrong_codes_are_each_counted,
    the_lock_and_the_count_survive_a_restart,
    resend_issues_a_new_code_and_kills_the_old_one,
    malformed_codes_and_nothing_pending_are_refused,
    an_expired_step_refuses_its_code,
);
