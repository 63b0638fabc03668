//! The test harness: a real server (gRPC + HTTP on random loopback ports), a fresh
//! database per test (SQLite temp file, or a new database on PostgreSQL), a real SMTP sink,
//! and a clock the test can move forward.
//!
//! One helper per job:
//! - a running service, in-process ([`TestApp`]) or the real binary
//!   ([`process::Served`]), is reached through one [`Service`]: the RPCs, the pages, the
//!   database (`count`, `eventually_count`), the mails' links (`link_in`, `token_in`);
//! - what arrives by mail: [`SmtpSink`] (`next_mail`, `assert_no_mail`, `receive` for many),
//!   and a mail's link, token and code: [`ReceivedMail`];
//! - waiting for something to hold: [`eventually`] (bounded in time and tries);
//! - a free loopback port: [`free_port`];
//! - PostgreSQL, and what a missing one means: [`postgres`]; a primary with a synchronous
//!   standby, and a proxy a failover moves: [`pair`];
//! - a NATS server with JetStream, and what the feed's publisher put there: [`nats`];
//! - `TEST_LOG=1` shows the service's logs in a failing test's output.

pub mod nats;
pub mod pair;
pub mod postgres;
pub mod process;
mod service;
pub mod smtp;

use std::sync::Arc;
use std::time::Duration;

use emailverify::clock::ShiftedClock;
use emailverify::grpc::pb::{self, EmailVerificationClient};
use emailverify::settings::{Config, Settings};
use emailverify::startup::{Application, Listeners};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt;

pub use postgres::{postgres_admin_url, postgres_available};
pub use process::free_port;
pub use service::Service;
pub use smtp::{Inbox, ReceivedMail, SmtpSink};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` once per database backend. A PostgreSQL case without
/// a PostgreSQL fails under `CI=true` and is otherwise skipped and said (see [`postgres`]).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::helpers::Backend::Sqlite).await }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::helpers::postgres_available().await {
                        super::$name($crate::helpers::Backend::Postgres).await
                    }
                }
            )+
        }
    };
}

/// A fresh, empty database for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A database the test manages itself.
    pub fn at(url: String) -> Self {
        Self { url, _dir: None }
    }
}

pub async fn fresh_database(backend: Backend) -> TestDb {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("ev.db").display());
            TestDb {
                url,
                _dir: Some(dir),
            }
        }
        Backend::Postgres => {
            let admin = postgres_admin_url().await.expect("postgres is available");
            let name = format!("ev_{}", uuid::Uuid::new_v4().simple());
            let conn = Database::connect(&admin)
                .await
                .expect("connect to the PostgreSQL server");
            conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            conn.close().await.ok();
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path(&format!("/{name}"));
            TestDb::at(url.to_string())
        }
    }
}

/// Settings as an operator would give them, pointing at the test's database and sink.
pub fn test_settings(db: &TestDb, smtp: &SmtpSink) -> Settings {
    Settings {
        database_url: db.url.clone(),
        grpc_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
        admin_addr: "127.0.0.1:0".into(),
        public_url: "http://127.0.0.1:1".into(),
        mail_url: smtp.url(),
        mail_from: "Wallet <no-reply@wallet.test>".into(),
        token_keys: Some(emailverify::domain::Keyring::generate_key_base64()),
        verify_ttl: "24h".into(),
        change_ttl: "1h".into(),
        resend_cooldown: "60s".into(),
        api_tokens: None,
        success_url: None,
        data_dir: std::env::temp_dir(),
        mail_retry_base: "200ms".into(),
        mail_max_attempts: "12".into(),
        log_format: "pretty".into(),
        ..Settings::default()
    }
}

/// The application running inside the test process, on the test's runtime.
pub struct TestApp {
    pub service: Service,
    /// The bounce listener's address, when the settings turn it on.
    pub inbound: Option<std::net::SocketAddr>,
    pub smtp: Arc<SmtpSink>,
    pub clock: ShiftedClock,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _db: TestDb,
}

/// `app.request_verification(..)`, `app.count(..)`, `app.grpc`, …: what every running
/// service offers.
impl std::ops::Deref for TestApp {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Spawns the app after `tweak` adjusts its settings.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let mut settings = test_settings(&db, &smtp);
    tweak(&mut settings);
    start(db, smtp, settings, ShiftedClock::default()).await
}

/// Starts an application on `settings` (used again to restart on the same database).
pub async fn start(
    db: TestDb,
    smtp: Arc<SmtpSink>,
    settings: Settings,
    clock: ShiftedClock,
) -> TestApp {
    init_test_logs();
    let listeners = Listeners {
        grpc: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        http: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let grpc_addr = listeners.grpc.local_addr().unwrap();
    let http_base = format!("http://{}", listeners.http.local_addr().unwrap());
    let admin_addr = listeners.admin.local_addr().unwrap();
    let mut config: Config = settings.resolve().expect("test settings are valid");
    config.policy.public_url = http_base.clone();
    let app = Application::build_on(config, Arc::new(clock.clone()), listeners)
        .await
        .expect("the application starts");
    let stop = app.stop_handle();
    let inbound = app.inbound_addr();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        inbound,
        service: Service::connect(grpc_addr, http_base, db.url.clone())
            .await
            .with_admin(admin_addr),
        smtp,
        clock,
        stop,
        server: Some(server),
        _db: db,
    }
}

impl TestApp {
    /// The next mail the SMTP sink receives (waits, never sleeps a fixed time).
    pub async fn next_mail(&self) -> ReceivedMail {
        self.smtp.next_mail().await
    }

    /// Asserts that no further mail arrives for a short while.
    pub async fn assert_no_mail(&self) {
        self.smtp.assert_no_mail().await
    }

    /// Sign-up completed: requests, reads the mail, confirms. Returns the confirmation.
    pub async fn verified_user(&self, user: &str, email: &str) -> pb::ConfirmLinkResponse {
        self.request_verification(user, email)
            .await
            .expect("request accepted");
        let mail = self.next_mail().await;
        self.confirm(&self.token_in(&mail))
            .await
            .expect("confirmation accepted")
    }

    /// Stops the server and waits for it to finish; returns the database to reuse.
    pub async fn stop(mut self) -> (TestDb, Arc<SmtpSink>) {
        self.stop.cancel();
        if let Some(s) = self.server.take() {
            s.await.unwrap().unwrap();
        }
        let db = std::mem::replace(&mut self._db, TestDb::at(String::new()));
        (db, self.smtp.clone())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Whether `TEST_LOG` asks for the service's logs.
pub fn test_log() -> bool {
    std::env::var("TEST_LOG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// With `TEST_LOG` set, the in-process service logs into the output libtest captures for
/// each test (shown when the test fails, or with `--nocapture`): the runtime's threads of a
/// test inherit its capture. `RUST_LOG` filters as in the service. Installed once.
fn init_test_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if test_log() {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_test_writer()
                .try_init();
        }
    });
}

/// Calls `check` until it gives `Some` (every 50 ms, for at most `within`).
pub async fn poll_until<T>(
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    // Bounded in time by the deadline, in tries by the pause between them.
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, check()).await {
            Ok(Some(v)) => return Some(v),
            Ok(None) if !left.is_zero() => {
                tokio::time::sleep(Duration::from_millis(50).min(left)).await
            }
            _ => return None,
        }
    }
}

/// Waits until `check` gives `Some` (bounded by `within`); fails naming `what` otherwise.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    poll_until(within, check)
        .await
        .unwrap_or_else(|| panic!("{what}: not within {within:?}"))
}

/// Number of rows in a table, with an optional `WHERE`, on any connection.
pub async fn count(db: &DatabaseConnection, table_where: &str) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table_where}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

/// The outbox grouped by state, attempts, claim and last error: what a failing delivery
/// test shows.
pub async fn outbox_picture(db_url: &str) -> Vec<String> {
    use sea_orm::Statement;
    let conn = Database::connect(db_url).await.unwrap();
    let rows = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT state, attempts, claimed_by IS NULL AS unclaimed, last_error, COUNT(*) AS n FROM outbox GROUP BY state, attempts, claimed_by IS NULL, last_error".to_string(),
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            format!(
                "{} attempts={} unclaimed={:?} err={:?} n={}",
                r.try_get::<String>("", "state").unwrap(),
                r.try_get::<i32>("", "attempts").unwrap(),
                r.try_get::<bool>("", "unclaimed").ok(),
                r.try_get::<Option<String>>("", "last_error").unwrap(),
                r.try_get::<i64>("", "n").unwrap()
            )
        })
        .collect()
}

/// The `i`-th sign-up of a load: `user-<i>` with `u<i>@example.com`.
pub fn sign_up(i: usize) -> pb::RequestVerificationRequest {
    pb::RequestVerificationRequest {
        user_id: format!("user-{i}"),
        email: format!("u{i}@example.com"),
        locale: String::new(),
    }
}

/// Sends sign-ups 0..n, spread over `clients`, `concurrency` at a time, and asserts every
/// one was accepted.
pub async fn sign_ups(clients: &[EmailVerificationClient<Channel>], n: usize, concurrency: usize) {
    use futures::StreamExt;
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let mut grpc = clients[i % clients.len()].clone();
            async move { grpc.request_verification(sign_up(i)).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for r in results {
        r.expect("sign-up accepted");
    }
}

/// The value of one series (`name{labels}` as exported) on a `/metrics` page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
}

/// The `Retry-After` of a 429 page, in seconds.
pub fn retry_after_secs(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Asserts the gRPC code and the contract's ErrorInfo reason (domain `emailverify`).
pub fn assert_reason(status: &tonic::Status, code: tonic::Code, reason: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "emailverify");
}

pub fn expect_err<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> tonic::Status {
    r.expect_err("the call must be refused")
}
