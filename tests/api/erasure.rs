//! EraseUser (API.md, "Erasure and retention"): afterwards no row holds the user's address
//! or id but the one `user_erased` event (and a suppression of the address, if any); the
//! address is free for others; repeating it is OK; the old links are unknown. Release 3:
//! the rate-limit buckets stay (keyed digests, no personal data), so a sign-up → erase
//! loop never restores quota, neither an inbox's nor a prober's.

use emailverify::grpc::pb;
use tonic::Code;

use crate::helpers::{Backend, TestApp, assert_reason, expect_err, spawn_app};

/// The limits of the default settings these tests run against.
const PER_RECIPIENT: usize = 5;
const PER_USER: usize = 10;

async fn erase(app: &TestApp, user: &str) -> Result<(), tonic::Status> {
    app.grpc
        .clone()
        .erase_user(pb::EraseUserRequest {
            user_id: user.into(),
        })
        .await
        .map(|_| ())
}

async fn erasure_leaves_only_the_user_erased_event(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("user-1", "jane@example.com").await;
    app.request_change("user-1", "jane.new@example.org")
        .await
        .unwrap();
    let old_link = app.token_in(&app.next_mail().await);
    app.verified_user("user-9", "someone@example.net").await;
    let buckets_before = app.count("rate_limits").await;

    erase(&app, "user-1").await.expect("erased");

    let dump = app.dump_database().await;
    for gone in ["jane@example.com", "jane.new@example.org", "j***"] {
        assert!(
            !dump.contains(gone),
            "{gone} is still in the database: {dump}"
        );
    }
    assert_eq!(app.count("users WHERE user_id = 'user-1'").await, 0);
    assert_eq!(app.count("flows WHERE user_id = 'user-1'").await, 0);
    assert_eq!(app.count("outbox WHERE user_id = 'user-1'").await, 0);
    assert_eq!(
        app.count("events WHERE user_id = 'user-1'").await,
        1,
        "one event is left"
    );
    assert_eq!(
        app.count("events WHERE user_id = 'user-1' AND event_type = 'user_erased' AND masked_address = '' AND detail = ''")
            .await,
        1
    );
    // The limit buckets stay, and none of them names the user or an address.
    assert_eq!(app.count("rate_limits").await, buckets_before);
    assert_eq!(
        app.count("rate_limits WHERE bucket LIKE '%user-1%' OR bucket LIKE '%jane%'")
            .await,
        0
    );
    assert!(
        dump.contains("someone@example.net"),
        "another user is untouched"
    );

    // Unknown now; its links too.
    assert_reason(
        &expect_err(app.status("user-1").await),
        Code::NotFound,
        "USER_NOT_FOUND",
    );
    assert_reason(
        &expect_err(app.confirm(&old_link).await),
        Code::NotFound,
        "TOKEN_NOT_FOUND",
    );
    // Erasing again, or a user never seen: OK, and nothing more is written.
    erase(&app, "user-1").await.expect("erasing twice is OK");
    erase(&app, "never-seen")
        .await
        .expect("an unknown user is OK");
    assert_eq!(app.count("events WHERE user_id = 'user-1'").await, 1);
    assert_eq!(app.count("events WHERE user_id = 'never-seen'").await, 0);
    assert_reason(
        &expect_err(erase(&app, "").await),
        Code::InvalidArgument,
        "INVALID_USER_ID",
    );

    // The address is free for someone else.
    app.verified_user("user-2", "jane@example.com").await;
    assert!(app.status("user-2").await.unwrap().email_verified);
}

/// One account: sign up an inbox, wait until the mail is at the sink, erase, again, 60
/// times. The inbox gets its limit's worth of mails, not 60.
async fn an_erase_loop_never_restores_an_inboxs_quota(backend: Backend) {
    let app = spawn_app(backend).await;
    let (mut delivered, mut limited) = (0, 0);
    for _ in 0..60 {
        match app
            .request_verification("attacker", "target@example.com")
            .await
        {
            Ok(_) => {
                app.next_mail().await;
                delivered += 1;
            }
            Err(e) => {
                assert_reason(&e, Code::ResourceExhausted, "RATE_LIMITED");
                limited += 1;
            }
        }
        erase(&app, "attacker").await.expect("erased");
    }
    assert_eq!(
        delivered, PER_RECIPIENT,
        "{delivered} mails reached the inbox"
    );
    assert_eq!(limited, 60 - PER_RECIPIENT);
    app.assert_no_mail().await;
}

/// One account probing whether an address is taken, erased after every probe (each
/// round signs up an address of its own first, so there is a user row to erase): the
/// probes answer EMAIL_TAKEN at most the per-user limit's worth of times, then
/// RATE_LIMITED.
async fn an_erase_loop_never_restores_probing_quota(backend: Backend) {
    let app = spawn_app(backend).await;
    app.verified_user("victim", "victim@example.com").await;
    let mut taken = 0;
    for round in 0..60 {
        let own = format!("prober{round}@example.net");
        let _ = app.request_verification("prober", &own).await;
        match app
            .request_verification("prober", "victim@example.com")
            .await
        {
            Ok(flow) => panic!("a probe was accepted: {flow:?}"),
            Err(e) if e.code() == Code::AlreadyExists => taken += 1,
            Err(e) => assert_reason(&e, Code::ResourceExhausted, "RATE_LIMITED"),
        }
        erase(&app, "prober").await.expect("erased");
    }
    assert!(
        (1..=PER_USER).contains(&taken),
        "{taken} probes of 60 said the address is taken"
    );
}

crate::on_both_backends!(
    erasure_leaves_only_the_user_erased_event,
    an_erase_loop_never_restores_an_inboxs_quota,
    an_erase_loop_never_restores_probing_quota,
);
