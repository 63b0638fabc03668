//! Key rotation: the newest key signs, every configured key verifies. Links minted under
//! an older key keep working while it is configured; a removed key's links stop working.

use emailverify::clock::ShiftedClock;
use emailverify::domain::Keyring;
use emailverify::grpc::pb;
use tonic::Code;

use crate::helpers::{
    Backend, SmtpSink, assert_reason, expect_err, fresh_database, start, test_settings,
};

async fn rotating_keys_keeps_old_links_working_until_the_old_key_is_removed(backend: Backend) {
    let (old, new) = (
        Keyring::generate_key_base64(),
        Keyring::generate_key_base64(),
    );
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let mut settings = test_settings(&db, &smtp);
    let clock = ShiftedClock::default();

    // Minted under the old key.
    settings.token_keys = Some(old.clone());
    let app = start(db, smtp, settings.clone(), clock.clone()).await;
    app.request_verification("alice", "alice@example.com")
        .await
        .unwrap();
    app.request_verification("bob", "bob@example.com")
        .await
        .unwrap();
    let (m1, m2) = (app.next_mail().await, app.next_mail().await);
    let (alice, bob) = if m1.to[0].starts_with("alice") {
        (m1, m2)
    } else {
        (m2, m1)
    };
    let alice_token = app.token_in(&alice);
    let bob_token = app.token_in(&bob);
    let (db, smtp) = app.stop().await;

    // Rotated: the new key signs, the old one still verifies.
    settings.token_keys = Some(format!("{new},{old}"));
    let app = start(db, smtp, settings.clone(), clock.clone()).await;
    let ok = app
        .confirm(&alice_token)
        .await
        .expect("an old-key link works after rotation");
    assert_eq!(ok.outcome(), pb::Outcome::EmailVerified);
    app.request_verification("carol", "carol@example.com")
        .await
        .unwrap();
    let carol_token = app.token_in(&app.next_mail().await);
    let (db, smtp) = app.stop().await;

    // The old key removed: its links stop working; the new key's still work.
    settings.token_keys = Some(new.clone());
    let app = start(db, smtp, settings, clock).await;
    assert_reason(
        &expect_err(app.confirm(&bob_token).await),
        Code::NotFound,
        "TOKEN_NOT_FOUND",
    );
    assert_eq!(
        app.get(&format!("/verify?token={bob_token}"))
            .await
            .status(),
        404
    );
    app.confirm(&carol_token)
        .await
        .expect("a new-key link works");
}

crate::on_both_backends!(rotating_keys_keeps_old_links_working_until_the_old_key_is_removed);
