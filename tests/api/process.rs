//! The real binary, as an operator runs it: `emailverify serve` on environment settings,
//! `emailverify migrate`, refusal of bad settings, a clean stop on SIGTERM, and logs that
//! hold no token and no full address.

use std::process::Stdio;
use std::time::Duration;

use emailverify::grpc::pb::{self, EmailVerificationClient};
use tokio::process::Command;

use crate::helpers::{Backend, SmtpSink, fresh_database};

const BIN: &str = env!("CARGO_BIN_EXE_emailverify");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running `emailverify serve` process on free loopback ports.
pub struct Served {
    pub child: tokio::process::Child,
    /// Everything the process logs, read as it comes: an unread pipe would fill up and
    /// stall the process in the middle of a log line.
    logs: tokio::task::JoinHandle<String>,
    pub grpc: EmailVerificationClient<tonic::transport::Channel>,
    pub base: String,
}

pub async fn serve(db_url: &str, smtp: &SmtpSink, key: &str, extra: &[(&str, &str)]) -> Served {
    let (grpc_port, http_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{http_port}");
    let mut cmd = command(&["serve"]);
    cmd.env("DATABASE_URL", db_url)
        .env("EMAILVERIFY_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("EMAILVERIFY_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("EMAILVERIFY_PUBLIC_URL", &base)
        .env("EMAILVERIFY_MAIL_URL", smtp.url())
        .env("EMAILVERIFY_TOKEN_KEYS", key);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let logs = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let _ = tokio::join!(out.read_to_end(&mut a), err.read_to_end(&mut b));
        format!(
            "{}{}",
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b)
        )
    });
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..150 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            ready = r.status() == 200;
            if ready {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the service became ready");
    let grpc = EmailVerificationClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .unwrap();
    Served {
        child,
        logs,
        grpc,
        base,
    }
}

impl Served {
    /// SIGTERM, then the exit status and everything the process logged.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("the service stops within 15s of SIGTERM")
            .unwrap();
        (status, self.logs.await.unwrap())
    }
}

pub fn token_of(mail: &crate::helpers::ReceivedMail) -> String {
    mail.text
        .split("token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn code_of(mail: &crate::helpers::ReceivedMail) -> String {
    crate::helpers::code_line(&mail.text)
}

async fn the_binary_serves_a_whole_flow_and_stops_cleanly_on_sigterm(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let key = emailverify::domain::Keyring::generate_key_base64();
    let mut app = serve(
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
    let http = reqwest::Client::new();
    let wait = Duration::from_secs(15);

    // Sign-up, confirmed on the link page.
    app.grpc
        .request_verification(pb::RequestVerificationRequest {
            user_id: "user-1".into(),
            email: "jane.doe@example.com".into(),
            locale: "en".into(),
        })
        .await
        .unwrap();
    let first = smtp.next_within(wait).await.expect("a mail");
    let page = http
        .post(format!("{}/verify", app.base))
        .form(&[("token", token_of(&first))])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let status = app
        .grpc
        .get_status(pb::GetStatusRequest {
            user_id: "user-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.email_verified);

    // A change: a wrong code, a resend, both steps by code, the notice.
    app.grpc
        .request_change(pb::RequestChangeRequest {
            user_id: "user-1".into(),
            new_email: "jane.new@example.org".into(),
            locale: "ne".into(),
        })
        .await
        .unwrap();
    let step1 = smtp.next_within(wait).await.expect("a mail");
    let wrong = format!(
        "{:06}",
        (code_of(&step1).parse::<u32>().unwrap() + 1) % 1_000_000
    );
    app.grpc
        .confirm_code(pb::ConfirmCodeRequest {
            user_id: "user-1".into(),
            code: wrong.clone(),
        })
        .await
        .unwrap_err();
    app.grpc
        .resend(pb::ResendRequest {
            user_id: "user-1".into(),
        })
        .await
        .unwrap();
    let step1b = smtp.next_within(wait).await.expect("a mail");
    app.grpc
        .confirm_code(pb::ConfirmCodeRequest {
            user_id: "user-1".into(),
            code: code_of(&step1b),
        })
        .await
        .unwrap();
    let step2 = smtp.next_within(wait).await.expect("a mail");
    app.grpc
        .confirm_link(pb::ConfirmLinkRequest {
            token: token_of(&step2),
        })
        .await
        .unwrap();
    let notice = smtp.next_within(wait).await.expect("the notice");
    assert_eq!(notice.to, vec!["jane.doe@example.com".to_string()]);
    app.grpc
        .list_events(pb::ListEventsRequest {
            user_id: "user-1".into(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap();

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
    for secret in [
        "jane.doe@example.com".to_string(),
        "jane.new@example.org".to_string(),
        key.clone(),
        token_of(&first),
        token_of(&step1),
        token_of(&step1b),
        token_of(&step2),
        code_of(&step1),
        code_of(&step1b),
        code_of(&step2),
        wrong,
    ] {
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

async fn migrate_prepares_an_empty_database_on_its_own(backend: Backend) {
    let db = fresh_database(backend).await;
    let out = command(&["migrate"])
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = sea_orm::Database::connect(&db.url).await.unwrap();
    use sea_orm::ConnectionTrait;
    for table in ["users", "flows", "tokens", "outbox", "events"] {
        conn.execute_unprepared(&format!("SELECT COUNT(*) FROM {table}"))
            .await
            .unwrap();
    }
    // Running it again is a no-op.
    let again = command(&["migrate"])
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    assert!(again.status.success());
}

async fn a_bad_setting_stops_the_start_and_is_named(backend: Backend) {
    let db = fresh_database(backend).await;
    for (var, value) in [
        ("EMAILVERIFY_VERIFY_TTL", "banana"),
        ("EMAILVERIFY_TOKEN_KEYS", "c2hvcnQ="),
        ("EMAILVERIFY_MAIL_URL", "carrier-pigeon://coop"),
    ] {
        let out = command(&["serve"])
            .env("DATABASE_URL", &db.url)
            .env(var, value)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var} not named in: {stderr}");
    }
    // The same settings as flags.
    let out = command(&["serve", "--verify-ttl", "banana"])
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
}

/// Limits live in the database: two processes on one Postgres share them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_share_the_rate_limits() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let db = fresh_database(Backend::Postgres).await;
    let smtp = SmtpSink::start().await;
    let key = emailverify::domain::Keyring::generate_key_base64();
    let limits = [
        ("EMAILVERIFY_LIMIT_PER_RECIPIENT", "3/1h"),
        ("EMAILVERIFY_LIMIT_PER_USER", "2/1h"),
    ];
    let mut a = serve(&db.url, &smtp, &key, &limits).await;
    let mut b = serve(&db.url, &smtp, &key, &limits).await;
    let ask = |user: &str| pb::RequestVerificationRequest {
        user_id: user.into(),
        email: "victim@example.com".into(),
        locale: String::new(),
    };
    // Per recipient: 3 mails in an hour, across both processes.
    a.grpc.request_verification(ask("u1")).await.unwrap();
    b.grpc.request_verification(ask("u2")).await.unwrap();
    a.grpc.request_verification(ask("u3")).await.unwrap();
    let refused = b.grpc.request_verification(ask("u4")).await.unwrap_err();
    crate::helpers::assert_reason(&refused, tonic::Code::ResourceExhausted, "RATE_LIMITED");
    // Per user: 2 requests in an hour, across both processes.
    let other = |n: u32| pb::RequestVerificationRequest {
        user_id: "same-user".into(),
        email: format!("x{n}@example.com"),
        locale: String::new(),
    };
    a.grpc.request_verification(other(1)).await.unwrap();
    b.grpc.request_verification(other(2)).await.unwrap();
    let refused = a.grpc.request_verification(other(3)).await.unwrap_err();
    crate::helpers::assert_reason(&refused, tonic::Code::ResourceExhausted, "RATE_LIMITED");
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

    let out = command(&["outbox", "retry-dead"])
        .env("DATABASE_URL", app_db_url(&app))
        .env("EMAILVERIFY_TOKEN_KEYS", &key)
        .env("EMAILVERIFY_PUBLIC_URL", &app.http_base)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
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

fn app_db_url(app: &crate::helpers::TestApp) -> String {
    app.db_url.clone()
}

async fn migrate_status_lists_applied_and_pending_migrations(backend: Backend) {
    let db = fresh_database(backend).await;
    let status = |db_url: String| async move {
        let out = command(&["migrate", "--status"])
            .env("DATABASE_URL", db_url)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let before = status(db.url.clone()).await;
    assert_eq!(
        before
            .lines()
            .filter(|l| l.starts_with("pending m2026"))
            .count(),
        3,
        "{before}"
    );
    assert!(
        command(&["migrate"])
            .env("DATABASE_URL", &db.url)
            .output()
            .await
            .unwrap()
            .status
            .success()
    );
    let after = status(db.url.clone()).await;
    assert_eq!(
        after
            .lines()
            .filter(|l| l.starts_with("applied m2026"))
            .count(),
        3,
        "{after}"
    );
    assert!(!after.contains("pending"));
}

/// Expand-only migrations: what the first release wrote (its columns only) still works on
/// the newest schema, so rolling the binary back never meets a schema it cannot write.
async fn the_newest_schema_accepts_the_first_releases_writes(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let db = fresh_database(backend).await;
    assert!(
        command(&["migrate"])
            .env("DATABASE_URL", &db.url)
            .output()
            .await
            .unwrap()
            .status
            .success()
    );
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
    let key = emailverify::domain::Keyring::generate_key_base64();
    let check = |extra: Vec<(&'static str, String)>| {
        let mut cmd = command(&["check-config"]);
        cmd.env("DATABASE_URL", &db.url)
            .env("EMAILVERIFY_MAIL_URL", smtp.url())
            .env("EMAILVERIFY_TOKEN_KEYS", &key);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        async move { cmd.output().await.unwrap() }
    };
    let good = check(vec![]).await;
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let said = String::from_utf8_lossy(&good.stdout);
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
        let out = check(vec![(var, value.clone())]).await;
        assert!(!out.status.success(), "{var}={value} passed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var} not named: {stderr}");
    }
}

/// The embedded set-up generates a token key once; every later start says it still uses it.
#[tokio::test]
async fn without_token_keys_every_start_warns_that_a_generated_key_is_used() {
    let dir = tempfile::tempdir().unwrap();
    for run in ["first", "second"] {
        let out = command(&["check-config"])
            .current_dir(dir.path())
            .env("EMAILVERIFY_LOG_FORMAT", "json")
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let logged = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            logged.contains("EMAILVERIFY_TOKEN_KEYS is unset"),
            "{run} run did not warn: {logged}"
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
    migrate_prepares_an_empty_database_on_its_own,
    a_bad_setting_stops_the_start_and_is_named,
);
