//! The real binary, as an operator runs it: `emailverify serve` on environment settings,
//! `emailverify migrate`, refusal of bad settings, a clean stop on SIGTERM (within its
//! deadline, handing back the mail it could not finish), and logs that hold no token and no
//! full address. The harness is `helpers::process`.

use std::time::Duration;

use emailverify::domain::Keyring;

use crate::helpers::process::{Replicas, command, replicas, run, run_ok, serve};
use crate::helpers::{Backend, SmtpSink, assert_reason, eventually, free_port, fresh_database};

async fn the_binary_serves_a_whole_flow_and_stops_cleanly_on_sigterm(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let key = Keyring::generate_key_base64();
    let app = serve(
        &db.url,
        &smtp,
        &key,
        &[
            ("EMAILVERIFY_LOG_FORMAT", "json"),
            // The most talkative level: nothing secret may appear even here.
            ("RUST_LOG", "debug"),
            ("EMAILVERIFY_RESEND_COOLDOWN", "0s"),
        ],
    )
    .await;

    // Sign-up, confirmed on the link page.
    app.request_verification_in("user-1", "jane.doe@example.com", "en")
        .await
        .unwrap();
    let first = smtp.next_mail().await;
    let page = app.post_form("/verify", &app.token_in(&first)).await;
    assert_eq!(page.status(), 200);
    assert!(app.status("user-1").await.unwrap().email_verified);

    // A change: a wrong code, a resend, both steps by code, the notice.
    app.request_change_in("user-1", "jane.new@example.org", "ne")
        .await
        .unwrap();
    let step1 = smtp.next_mail().await;
    let wrong = format!(
        "{:06}",
        (step1.code().parse::<u32>().unwrap() + 1) % 1_000_000
    );
    app.confirm_code("user-1", &wrong).await.unwrap_err();
    app.resend("user-1").await.unwrap();
    let step1b = smtp.next_mail().await;
    app.confirm_code("user-1", &step1b.code()).await.unwrap();
    let step2 = smtp.next_mail().await;
    app.confirm(&app.token_in(&step2)).await.unwrap();
    let notice = smtp.next_mail().await;
    assert_eq!(notice.to, vec!["jane.doe@example.com".to_string()]);
    app.events("user-1", 100, "").await.unwrap();

    let secrets = [
        "jane.doe@example.com".to_string(),
        "jane.new@example.org".to_string(),
        key.clone(),
        app.token_in(&first),
        app.token_in(&step1),
        app.token_in(&step1b),
        app.token_in(&step2),
        step1.code(),
        step1b.code(),
        step2.code(),
        wrong,
    ];
    let (status, logs) = app.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        logs.contains("emailverify is serving") && logs.contains("emailverify stopped"),
        "{logs}"
    );
    assert!(
        logs.contains("j***@example.com"),
        "masked addresses are logged: {logs}"
    );
    for secret in secrets {
        assert!(
            !logs.contains(&secret),
            "a secret or full address reached the logs: {secret}"
        );
    }
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}

/// On SIGTERM a send that hangs does not keep the process past EMAILVERIFY_SHUTDOWN_TIMEOUT,
/// and the mail it held is handed back: still pending, unclaimed, and the next process sends
/// it at once instead of waiting out the lease.
async fn a_send_hanging_at_sigterm_ends_at_the_shutdown_deadline_and_its_mail_is_handed_back(
    backend: Backend,
) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let key = Keyring::generate_key_base64();
    let deadline = Duration::from_secs(2);
    let env = [
        ("EMAILVERIFY_SHUTDOWN_TIMEOUT", "2s"),
        // Far longer than the test waits: only a released claim lets the mail go again.
        ("EMAILVERIFY_MAIL_LEASE", "60s"),
    ];
    smtp.hang_after_data();
    let app = serve(&db.url, &smtp, &key, &env).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    eventually(
        "the send is in flight and hangs",
        Duration::from_secs(15),
        async || (smtp.hanging_sends() == 1).then_some(()),
    )
    .await;
    let held = "outbox WHERE state = 'pending' AND claimed_by IS NOT NULL";
    assert_eq!(app.count(held).await, 1, "the worker holds the mail");

    // The send cannot finish (the SMTP client would wait far longer than the deadline).
    let first_base = app.http_base.clone();
    let stopped = std::time::Instant::now();
    app.terminate_within(deadline + Duration::from_secs(5))
        .await;
    eprintln!("stopped {:?} after SIGTERM", stopped.elapsed());

    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    let handed_back = crate::helpers::count(
        &conn,
        "outbox WHERE state = 'pending' AND claimed_by IS NULL AND claimed_until IS NULL",
    )
    .await;
    assert_eq!(
        handed_back,
        1,
        "the unfinished mail's claim was released: {:#?}",
        crate::helpers::outbox_picture(&db.url).await
    );
    assert_eq!(smtp.hanging_sends(), 1);

    // Another process sends it at once, long before the lease would have run out.
    smtp.up();
    let next = serve(&db.url, &smtp, &key, &env).await;
    let mail = smtp.next_mail().await;
    assert_eq!(mail.to, vec!["jane@example.com".to_string()]);
    // Its link was minted by the first process, on that process's public URL.
    next.confirm(&mail.token(&first_base))
        .await
        .expect("the handed-back mail's link works");
    assert!(next.terminate().await.0.success());
}

async fn migrate_prepares_an_empty_database_on_its_own(backend: Backend) {
    let db = fresh_database(backend).await;
    run_ok(command(&["migrate"]).env("DATABASE_URL", &db.url)).await;
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    use sea_orm::ConnectionTrait;
    for table in ["users", "flows", "tokens", "outbox", "events"] {
        conn.execute_unprepared(&format!("SELECT COUNT(*) FROM {table}"))
            .await
            .unwrap();
    }
    // Running it again is a no-op.
    run_ok(command(&["migrate"]).env("DATABASE_URL", &db.url)).await;
}

async fn a_bad_setting_stops_the_start_and_is_named(backend: Backend) {
    let db = fresh_database(backend).await;
    for (var, value) in [
        ("EMAILVERIFY_VERIFY_TTL", "banana"),
        ("EMAILVERIFY_TOKEN_KEYS", "c2hvcnQ="),
        ("EMAILVERIFY_MAIL_URL", "carrier-pigeon://coop"),
    ] {
        let out = run(command(&["serve"])
            .env("DATABASE_URL", &db.url)
            .env(var, value))
        .await;
        assert!(!out.status.success(), "{var}={value} was accepted");
        assert!(
            out.stderr.contains(var),
            "{var} not named in: {}",
            out.stderr
        );
    }
    // The same settings as flags.
    let out = run(command(&["serve", "--verify-ttl", "banana"]).env("DATABASE_URL", &db.url)).await;
    assert!(!out.status.success());
}

/// Limits live in the database: two processes on one Postgres share them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_share_the_rate_limits() {
    let limits = [
        ("EMAILVERIFY_LIMIT_PER_RECIPIENT", "3/1h"),
        ("EMAILVERIFY_LIMIT_PER_USER", "2/1h"),
    ];
    let Some(Replicas {
        smtp,
        served: [a, b],
        ..
    }) = replicas(&limits).await
    else {
        return;
    };
    let victim = "victim@example.com";
    // Per recipient: 3 mails in an hour, across both processes.
    a.request_verification("u1", victim).await.unwrap();
    b.request_verification("u2", victim).await.unwrap();
    a.request_verification("u3", victim).await.unwrap();
    let refused = b.request_verification("u4", victim).await.unwrap_err();
    assert_reason(&refused, tonic::Code::ResourceExhausted, "RATE_LIMITED");
    // Per user: 2 requests in an hour, across both processes.
    a.request_verification("same-user", "x1@example.com")
        .await
        .unwrap();
    b.request_verification("same-user", "x2@example.com")
        .await
        .unwrap();
    let refused = a
        .request_verification("same-user", "x3@example.com")
        .await
        .unwrap_err();
    assert_reason(&refused, tonic::Code::ResourceExhausted, "RATE_LIMITED");
    // The refused requests sent nothing: 3 mails to the victim, 2 to the same user.
    let mut to = Vec::new();
    for _ in 0..5 {
        to.push(smtp.next_mail().await.to.join(","));
    }
    smtp.assert_no_mail().await;
    assert_eq!(to.iter().filter(|t| *t == victim).count(), 3, "{to:?}");
    assert!(a.terminate().await.0.success());
    assert!(b.terminate().await.0.success());
}

async fn outbox_retry_dead_gives_dead_mails_a_fresh_link(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let settings = crate::helpers::test_settings(&db, &smtp);
    let key = settings.token_keys.clone().unwrap();
    let app = crate::helpers::start(db, smtp.clone(), settings, Default::default()).await;
    // Two mails die: one of a flow still pending, one of a flow that a newer request replaced.
    smtp.reply_next(&[
        "550 5.7.1 rejected",
        "550 5.7.1 rejected",
        "550 5.7.1 rejected",
    ]);
    app.request_verification("replaced", "first@example.com")
        .await
        .unwrap();
    app.eventually_count("outbox WHERE state = 'dead'", 1).await;
    app.request_verification("replaced", "second@example.com")
        .await
        .unwrap();
    app.eventually_count("outbox WHERE state = 'dead'", 2).await;
    app.request_verification("pending", "jane@example.com")
        .await
        .unwrap();
    app.eventually_count("outbox WHERE state = 'dead'", 3).await;

    let said = run_ok(
        command(&["outbox", "retry-dead"])
            .env("DATABASE_URL", &app.db_url)
            .env("EMAILVERIFY_TOKEN_KEYS", &key)
            .env("EMAILVERIFY_PUBLIC_URL", &app.http_base),
    )
    .await
    .stdout;
    assert!(said.contains("sent 2 fresh link(s), left 1 dead"), "{said}");

    // The running service delivers the fresh links; they work.
    let mut to = Vec::new();
    for _ in 0..2 {
        let mail = app.next_mail().await;
        to.push(mail.to[0].clone());
        app.confirm(&app.token_in(&mail))
            .await
            .expect("the fresh link works");
    }
    to.sort();
    assert_eq!(to, ["jane@example.com", "second@example.com"]);
    app.assert_no_mail().await;
}

async fn migrate_status_lists_applied_and_pending_migrations(backend: Backend) {
    let db = fresh_database(backend).await;
    let status = async || {
        run_ok(command(&["migrate", "--status"]).env("DATABASE_URL", &db.url))
            .await
            .stdout
    };
    // Every migration this build knows.
    let known = {
        use sea_orm_migration::MigratorTrait;
        emailverify::migrations::Migrator::migrations().len()
    };
    assert!(known >= 5, "{known}");
    let before = status().await;
    assert_eq!(
        before
            .lines()
            .filter(|l| l.starts_with("pending m2026"))
            .count(),
        known,
        "{before}"
    );
    run_ok(command(&["migrate"]).env("DATABASE_URL", &db.url)).await;
    let after = status().await;
    assert_eq!(
        after
            .lines()
            .filter(|l| l.starts_with("applied m2026"))
            .count(),
        known,
        "{after}"
    );
    assert!(!after.contains("pending"));
}

/// Expand-only migrations: what the first release wrote (its columns only) still works on
/// the newest schema, so rolling the binary back never meets a schema it cannot write.
async fn the_newest_schema_accepts_the_first_releases_writes(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let db = fresh_database(backend).await;
    run_ok(command(&["migrate"]).env("DATABASE_URL", &db.url)).await;
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    for sql in [
        "INSERT INTO users (user_id, email, email_verified, verified_at, created_at, updated_at) VALUES ('u', 'a@b.co', false, NULL, 1, 1)",
        "INSERT INTO flows (flow_id, user_id, kind, step, state, new_email, old_email, locale, expires_at, resend_available_at, created_at, updated_at) VALUES ('f', 'u', 'verify', 'confirm_new', 'pending', 'a@b.co', NULL, 'en', 2, 1, 1, 1)",
        "INSERT INTO tokens (digest, flow_id, step, state, expires_at, created_at, used_at) VALUES ('d', 'f', 'confirm_new', 'live', 2, 1, NULL)",
        "INSERT INTO outbox (mail_id, user_id, flow_id, template, recipient, locale, params, sealed_link, state, attempts, next_attempt_at, claimed_until, last_error, created_at, sent_at) VALUES ('m', 'u', 'f', 'verify_link', 'a@b.co', 'en', '{}', NULL, 'sent', 1, 1, NULL, NULL, 1, 1)",
        "INSERT INTO events (user_id, flow_id, event_type, masked_address, detail, at) VALUES ('u', 'f', 'verification_requested', 'a***@b.co', '', 1)",
    ] {
        conn.execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

async fn check_config_passes_a_good_set_up_and_names_what_is_broken(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let key = Keyring::generate_key_base64();
    let check = || {
        let mut cmd = command(&["check-config"]);
        cmd.env("DATABASE_URL", &db.url)
            .env("EMAILVERIFY_MAIL_URL", smtp.url())
            .env("EMAILVERIFY_TOKEN_KEYS", &key);
        cmd
    };
    let said = run_ok(&mut check()).await.stdout;
    assert!(
        said.contains("ok   settings")
            && said.contains("ok   database")
            && said.contains("ok   mail"),
        "{said}"
    );

    let closed = format!("smtp://127.0.0.1:{}", free_port());
    for (var, value) in [
        ("EMAILVERIFY_MAIL_URL", closed),
        ("EMAILVERIFY_VERIFY_TTL", "banana".to_string()),
        (
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/nowhere".to_string(),
        ),
    ] {
        let out = run(check().env(var, &value)).await;
        assert!(!out.status.success(), "{var}={value} passed");
        assert!(out.stderr.contains(var), "{var} not named: {}", out.stderr);
    }
}

/// The embedded set-up generates a token key once; every later start says it still uses it.
#[tokio::test]
async fn without_token_keys_every_start_warns_that_a_generated_key_is_used() {
    let dir = tempfile::tempdir().unwrap();
    for start in ["first", "second"] {
        let out = run_ok(
            command(&["check-config"])
                .current_dir(dir.path())
                .env("EMAILVERIFY_LOG_FORMAT", "json"),
        )
        .await;
        let logged = out.stdout + &out.stderr;
        assert!(
            logged.contains("EMAILVERIFY_TOKEN_KEYS is unset"),
            "{start} start did not warn: {logged}"
        );
    }
    assert!(dir.path().join("data/token.key").exists());
}

crate::on_both_backends!(
    migrate_status_lists_applied_and_pending_migrations,
    the_newest_schema_accepts_the_first_releases_writes,
    check_config_passes_a_good_set_up_and_names_what_is_broken,
    outbox_retry_dead_gives_dead_mails_a_fresh_link,
    the_binary_serves_a_whole_flow_and_stops_cleanly_on_sigterm,
    a_send_hanging_at_sigterm_ends_at_the_shutdown_deadline_and_its_mail_is_handed_back,
    migrate_prepares_an_empty_database_on_its_own,
    a_bad_setting_stops_the_start_and_is_named,
);
