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

async fn the_binary_serves_a_whole_flow_and_stops_cleanly_on_sigterm(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let (grpc_port, http_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{http_port}");
    let child = command(&["serve"])
        .env("DATABASE_URL", &db.url)
        .env("EMAILVERIFY_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("EMAILVERIFY_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("EMAILVERIFY_PUBLIC_URL", &base)
        .env("EMAILVERIFY_MAIL_URL", smtp.url())
        .env(
            "EMAILVERIFY_TOKEN_KEYS",
            emailverify::domain::Keyring::generate_key_base64(),
        )
        .env("EMAILVERIFY_LOG_FORMAT", "json")
        // The most talkative level: nothing secret may appear even here.
        .env("RUST_LOG", "debug")
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            ready = r.status() == 200;
            if ready {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the service became ready");

    let mut grpc = EmailVerificationClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .unwrap();
    grpc.request_verification(pb::RequestVerificationRequest {
        user_id: "user-1".into(),
        email: "jane.doe@example.com".into(),
        locale: "en".into(),
    })
    .await
    .unwrap();
    let mail = smtp
        .next_within(Duration::from_secs(15))
        .await
        .expect("a mail");
    let token = mail
        .text
        .split("token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let page = http
        .post(format!("{base}/verify"))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let status = grpc
        .get_status(pb::GetStatusRequest {
            user_id: "user-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.email_verified);

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("the service stops within 15s of SIGTERM")
        .unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);

    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logs.contains("emailverify is serving") && logs.contains("emailverify stopped"),
        "{logs}"
    );
    assert!(
        logs.contains("j***@example.com"),
        "masked addresses are logged: {logs}"
    );
    assert!(
        !logs.contains("jane.doe@example.com"),
        "a full address reached the logs"
    );
    assert!(!logs.contains(&token), "a token reached the logs");
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

crate::on_both_backends!(
    the_binary_serves_a_whole_flow_and_stops_cleanly_on_sigterm,
    migrate_prepares_an_empty_database_on_its_own,
    a_bad_setting_stops_the_start_and_is_named,
);
