//! Addresses: one inbox, one key (API.md). Spellings of one inbox share its mailbox key,
//! which decides EMAIL_TAKEN and the per-recipient limit; addresses no relay should be
//! asked to deliver are INVALID_EMAIL; one non-Latin script is fine. And the migration
//! that introduced keys settles verified rows that turn out to share one.

use emailverify::clock::ShiftedClock;
use emailverify::grpc::pb;
use emailverify::migrations::Migrator;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use sea_orm_migration::MigratorTrait;
use tonic::Code;

use crate::helpers::{
    Backend, SmtpSink, assert_reason, expect_err, fresh_database, spawn_app, start, test_settings,
};

/// The default `EMAILVERIFY_LIMIT_PER_RECIPIENT` is 5 per hour.
const RECIPIENT_LIMIT: usize = 5;

/// 28 spellings of the one Gmail inbox `bomb@gmail.com`.
fn spellings_of_one_inbox() -> Vec<String> {
    let mut all: Vec<String> = (0..10).map(|i| format!("bomb+{i}@gmail.com")).collect();
    // 15 case mixes: every upper/lower pattern of the four letters but all-lower.
    for mask in 1..16u32 {
        let local: String = "bomb"
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if mask & (1 << i) != 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        all.push(format!("{local}@gmail.com"));
    }
    all.push("bo.mb@gmail.com".into());
    all.push("b.o.m.b+x@GoogleMail.com".into());
    all.push("BOMB@googlemail.com".into());
    assert_eq!(all.len(), 28);
    all
}

async fn one_inbox_spelled_28_ways_from_3_accounts_gets_the_recipient_limit_of_mails(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let accounts = ["attacker-1", "attacker-2", "attacker-3"];
    let (mut accepted, mut limited) = (0, 0);
    for (i, address) in spellings_of_one_inbox().iter().enumerate() {
        match app.request_verification(accounts[i % 3], address).await {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert_reason(&status, Code::ResourceExhausted, "RATE_LIMITED");
                limited += 1;
            }
        }
    }
    assert_eq!((accepted, limited), (RECIPIENT_LIMIT, 28 - RECIPIENT_LIMIT));
    for _ in 0..RECIPIENT_LIMIT {
        app.next_mail().await;
    }
    app.assert_no_mail().await;
    assert_eq!(app.count("outbox").await, RECIPIENT_LIMIT as i64);
    // Another inbox on the same domain is not affected.
    app.request_verification("bystander", "other@gmail.com")
        .await
        .unwrap();
    assert_eq!(
        app.next_mail().await.to,
        vec!["other@gmail.com".to_string()]
    );
}

/// Whoever confirms first keeps the inbox; the other spelling is EMAIL_TAKEN, at request
/// time once the first is verified, at confirm time when both were pending.
async fn two_accounts_cannot_both_verify_two_spellings_of_one_address(backend: Backend) {
    let app = spawn_app(backend).await;
    // Both pending, then both confirm.
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let first = app.next_mail().await;
    app.request_verification("user-2", "Jane@example.com")
        .await
        .unwrap();
    let second = app.next_mail().await;
    assert_eq!(second.to, vec!["Jane@example.com".to_string()]);
    app.confirm(&app.token_in(&first)).await.unwrap();
    assert_reason(
        &expect_err(app.confirm(&app.token_in(&second)).await),
        Code::AlreadyExists,
        "EMAIL_TAKEN",
    );
    // Now verified: any spelling is taken at request time, by sign-up or by change.
    for spelling in ["Jane@example.com", "JANE@EXAMPLE.COM", "jane+x@example.com"] {
        assert_reason(
            &expect_err(app.request_verification("user-3", spelling).await),
            Code::AlreadyExists,
            "EMAIL_TAKEN",
        );
    }
    app.verified_user("user-4", "user4@example.com").await;
    assert_reason(
        &expect_err(app.request_change("user-4", "JANE@example.com").await),
        Code::AlreadyExists,
        "EMAIL_TAKEN",
    );
    assert_eq!(app.count("users WHERE email_verified").await, 2);
    let loser = app.status("user-2").await.unwrap();
    assert_eq!(
        (loser.email.as_str(), loser.email_verified),
        ("Jane@example.com", false)
    );
    // The owner's own other spelling is theirs to move to (a change, both inboxes asked).
    app.request_change("user-1", "Jane@example.com")
        .await
        .unwrap();
}

async fn gmail_dots_tags_and_googlemail_share_one_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let confirmed = app
        .verified_user("user-1", "Jane.Doe+wallet@GoogleMail.com")
        .await;
    // Stored, shown and mailed as typed (the domain normalised).
    assert_eq!(confirmed.email, "Jane.Doe+wallet@googlemail.com");
    assert_eq!(
        app.status("user-1").await.unwrap().email,
        "Jane.Doe+wallet@googlemail.com"
    );
    assert_eq!(
        app.count("users WHERE email_key = 'janedoe@gmail.com' AND email_verified")
            .await,
        1
    );
    for spelling in [
        "janedoe@gmail.com",
        "j.a.n.e.d.o.e@gmail.com",
        "JaneDoe+other@gmail.com",
        "jane.doe@googlemail.com",
    ] {
        assert_reason(
            &expect_err(app.request_verification("user-2", spelling).await),
            Code::AlreadyExists,
            "EMAIL_TAKEN",
        );
    }
    // Dots count outside Gmail.
    app.request_verification("user-2", "jane.doe@example.com")
        .await
        .unwrap();
    app.request_verification("user-3", "janedoe@example.com")
        .await
        .unwrap();
}

async fn addresses_no_relay_should_deliver_are_invalid_and_write_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let refused = [
        "\"jane\"@example.com",
        "\"jane doe\"@example.com",
        "jane@[127.0.0.1]",
        "jane@[IPv6:2001:db8::1]",
        "jane@127.0.0.1",
        "jane@10.0.0.5",
        "jane@example",
        "jane@_.example.com",
        "jane@my_host.example.com",
        "j\u{430}ne@example.com",
        "p\u{430}yp\u{430}l@example.com",
    ];
    for raw in refused {
        let err = expect_err(app.request_verification("user-1", raw).await);
        assert_reason(&err, Code::InvalidArgument, "INVALID_EMAIL");
        let err = expect_err(app.request_change("user-1", raw).await);
        assert_reason(&err, Code::InvalidArgument, "INVALID_EMAIL");
    }
    for table in [
        "users",
        "flows",
        "tokens",
        "outbox",
        "events",
        "rate_limits",
    ] {
        assert_eq!(app.count(table).await, 0, "{table}");
    }
    app.assert_no_mail().await;
}

async fn an_address_in_one_non_latin_script_gets_its_mail(backend: Backend) {
    let app = spawn_app(backend).await;
    let flow = app
        .request_verification_in("user-1", "नमस्ते@Example.com", "ne")
        .await
        .unwrap();
    assert_eq!(flow.masked_recipient, "न***@example.com");
    let mail = app.next_mail().await;
    assert_eq!(mail.to, vec!["नमस्ते@example.com".to_string()]);
    let confirmed = app.confirm(&app.token_in(&mail)).await.unwrap();
    assert_eq!(confirmed.outcome(), pb::Outcome::EmailVerified);
    assert_eq!(confirmed.email, "नमस्ते@example.com");
    // Its key is itself (nothing to fold): a second account finds it taken.
    assert_reason(
        &expect_err(
            app.request_verification("user-2", "नमस्ते+x@example.com")
                .await,
        ),
        Code::AlreadyExists,
        "EMAIL_TAKEN",
    );
}

/// The migration that adds keys, on a database written at the schema before it: the
/// earliest verification of a shared inbox keeps it, the others become unverified with
/// their address kept, and say so in their audit trail.
async fn the_key_migration_settles_verified_spellings_of_one_inbox(backend: Backend) {
    let db = fresh_database(backend).await;
    let conn = Database::connect(&db.url).await.unwrap();
    let before = Migrator::migrations()
        .iter()
        .position(|m| m.name() == "m20261130_000001_mailbox_key")
        .expect("the key migration is listed");
    Migrator::up(&conn, Some(before as u32)).await.unwrap();
    for (user, email, verified, at) in [
        ("early", "jane@example.com", true, Some(100)),
        ("late", "Jane@example.com", true, Some(200)),
        ("timeless", "JANE+x@example.com", true, None),
        ("pending", "JANE@example.com", false, None),
        ("gmail-late", "jane.doe@gmail.com", true, Some(300)),
        ("gmail-early", "JaneDoe+w@googlemail.com", true, Some(250)),
        ("bob", "bob@example.com", true, Some(50)),
    ] {
        let at = at.map_or("NULL".to_string(), |t: i64| t.to_string());
        exec(
            &conn,
            &format!(
                "INSERT INTO users (user_id, email, email_verified, verified_at, created_at, updated_at) \
                 VALUES ('{user}', '{email}', {verified}, {at}, 1, 1)"
            ),
        )
        .await;
    }
    // More rows than the migration keys per statement.
    let bulk: Vec<String> = (0..1200)
        .map(|i| format!("('bulk-{i:04}', 'Bulk.{i}+x@example.com', false, NULL, 1, 1)"))
        .collect();
    exec(
        &conn,
        &format!(
            "INSERT INTO users (user_id, email, email_verified, verified_at, created_at, updated_at) VALUES {}",
            bulk.join(", ")
        ),
    )
    .await;
    Migrator::up(&conn, None).await.unwrap();
    assert_eq!(
        crate::helpers::count(&conn, "users WHERE email_key IS NULL").await,
        0
    );
    assert_eq!(
        crate::helpers::count(&conn, "users WHERE email_key = 'bulk.1199@example.com'").await,
        1
    );
    exec(&conn, "DELETE FROM users WHERE user_id LIKE 'bulk-%'").await;

    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT user_id, email, email_key, email_verified, verified_at FROM users",
        ))
        .await
        .unwrap();
    let mut got: Vec<(String, String, String, bool, Option<i64>)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "user_id").unwrap(),
                r.try_get("", "email").unwrap(),
                r.try_get("", "email_key").unwrap(),
                r.try_get("", "email_verified").unwrap(),
                r.try_get("", "verified_at").unwrap(),
            )
        })
        .collect();
    got.sort();
    let row = |u: &str, e: &str, k: &str, v: bool, at: Option<i64>| {
        (u.to_string(), e.to_string(), k.to_string(), v, at)
    };
    assert_eq!(
        got,
        vec![
            row("bob", "bob@example.com", "bob@example.com", true, Some(50)),
            row(
                "early",
                "jane@example.com",
                "jane@example.com",
                true,
                Some(100)
            ),
            row(
                "gmail-early",
                "JaneDoe+w@googlemail.com",
                "janedoe@gmail.com",
                true,
                Some(250)
            ),
            row(
                "gmail-late",
                "jane.doe@gmail.com",
                "janedoe@gmail.com",
                false,
                None
            ),
            row("late", "Jane@example.com", "jane@example.com", false, None),
            row(
                "pending",
                "JANE@example.com",
                "jane@example.com",
                false,
                None
            ),
            row(
                "timeless",
                "JANE+x@example.com",
                "jane@example.com",
                false,
                None
            ),
        ]
    );
    // The unique index is on the key now.
    let second = "UPDATE users SET email_verified = true WHERE user_id = 'late'";
    assert!(
        conn.execute_unprepared(second).await.is_err(),
        "a second verified row of one key must be refused"
    );

    // The service on the migrated database: the trail says what happened, and the inbox
    // stays taken for the accounts that lost it.
    let smtp = SmtpSink::start().await;
    let settings = test_settings(&db, &smtp);
    let app = start(db, smtp, settings, ShiftedClock::default()).await;
    for user in ["late", "timeless", "gmail-late"] {
        let events = app.events(user, 50, "").await.unwrap().events;
        assert!(
            events
                .iter()
                .any(|e| e.r#type == "email_unverified_by_migration"
                    && e.detail == "same_inbox_verified_earlier"
                    && e.masked_address.contains("***@")),
            "{user}: {events:?}"
        );
    }
    assert!(app.events("early", 50, "").await.unwrap().events.is_empty());
    assert_reason(
        &expect_err(app.request_verification("late", "Jane@example.com").await),
        Code::AlreadyExists,
        "EMAIL_TAKEN",
    );
    let status = app.status("late").await.unwrap();
    assert_eq!(
        (status.email.as_str(), status.email_verified),
        ("Jane@example.com", false)
    );
}

async fn exec(conn: &DatabaseConnection, sql: &str) {
    conn.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

crate::on_both_backends!(
    one_inbox_spelled_28_ways_from_3_accounts_gets_the_recipient_limit_of_mails,
    two_accounts_cannot_both_verify_two_spellings_of_one_address,
    gmail_dots_tags_and_googlemail_share_one_key,
    addresses_no_relay_should_deliver_are_invalid_and_write_nothing,
    an_address_in_one_non_latin_script_gets_its_mail,
    the_key_migration_settles_verified_spellings_of_one_inbox,
);
