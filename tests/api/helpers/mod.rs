//! The test harness: a real server (gRPC + HTTP on random loopback ports), a fresh
//! database per test (SQLite temp file, or a new database on PostgreSQL), a real SMTP sink,
//! and a clock the test can move forward.

pub mod smtp;

use std::sync::Arc;
use std::time::Duration;

use emailverify::core::clock::ShiftedClock;
use emailverify::grpc::pb::{self, EmailVerificationClient};
use emailverify::settings::{Config, Settings};
use emailverify::startup::Application;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt;

pub use smtp::{ReceivedMail, SmtpSink};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` once per database backend.
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

/// The server the Postgres tests create their databases on: `TEST_DATABASE_URL`, else a
/// testcontainers Postgres when Docker exists. Under `CI=true` its absence fails the test.
pub async fn postgres_admin_url() -> Option<String> {
    static URL: OnceCell<Option<String>> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            return Some(url);
        }
        if let Some(url) = container_url().await {
            return Some(url);
        }
        None
    })
    .await
    .clone()
}

async fn container_url() -> Option<String> {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    static CONTAINER: OnceCell<
        Option<testcontainers_modules::testcontainers::ContainerAsync<Postgres>>,
    > = OnceCell::const_new();
    let c = CONTAINER
        .get_or_init(|| async { Postgres::default().start().await.ok() })
        .await
        .as_ref()?;
    let port = c.get_host_port_ipv4(5432).await.ok()?;
    Some(format!(
        "postgres://postgres:postgres@127.0.0.1:{port}/postgres"
    ))
}

pub async fn postgres_available() -> bool {
    if postgres_admin_url().await.is_some() {
        return true;
    }
    assert!(
        std::env::var("CI").map(|v| v != "true").unwrap_or(true),
        "CI=true but no PostgreSQL: set TEST_DATABASE_URL (see .ci/run)"
    );
    eprintln!("skipping the PostgreSQL case: no TEST_DATABASE_URL and no Docker engine");
    false
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
                .expect("connect to TEST_DATABASE_URL");
            conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            conn.close().await.ok();
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path(&format!("/{name}"));
            TestDb {
                url: url.to_string(),
                _dir: None,
            }
        }
    }
}

/// Settings as an operator would give them, pointing at the test's database and sink.
pub fn test_settings(db: &TestDb, smtp: &SmtpSink) -> Settings {
    Settings {
        database_url: db.url.clone(),
        grpc_addr: "127.0.0.1:0".into(),
        http_addr: "127.0.0.1:0".into(),
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

pub struct TestApp {
    /// The database's name on the Postgres server (empty for SQLite).
    pub db_name: String,
    pub grpc: EmailVerificationClient<Channel>,
    pub grpc_addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    pub http_base: String,
    pub db: DatabaseConnection,
    pub db_url: String,
    pub smtp: Arc<SmtpSink>,
    pub clock: ShiftedClock,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _db: TestDb,
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
    let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc_listener.local_addr().unwrap();
    let http_base = format!("http://{}", http_listener.local_addr().unwrap());
    let mut config: Config = settings.resolve().expect("test settings are valid");
    config.policy.public_url = http_base.clone();
    let app = Application::build_on(
        config,
        Arc::new(clock.clone()),
        grpc_listener,
        http_listener,
    )
    .await
    .expect("the application starts");
    let stop = app.stop_handle();
    let server = tokio::spawn(app.run_until_stopped());
    // Lazy: an app serving TLS is reached through the test's own TLS channel instead.
    let channel = Channel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect_lazy();
    let db_conn = Database::connect(&db.url).await.unwrap();
    TestApp {
        db_name: url::Url::parse(&db.url)
            .ok()
            .filter(|u| u.scheme().starts_with("postgres"))
            .map(|u| u.path().trim_start_matches('/').to_string())
            .unwrap_or_default(),
        grpc: EmailVerificationClient::new(channel),
        grpc_addr,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        http_base,
        db: db_conn,
        db_url: db.url.clone(),
        smtp,
        clock,
        stop,
        server: Some(server),
        _db: db,
    }
}

impl TestApp {
    /// A fresh channel to the gRPC port (for the health and reflection clients).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The next mail the SMTP sink receives (waits, never sleeps a fixed time).
    pub async fn next_mail(&self) -> ReceivedMail {
        self.smtp
            .next_within(Duration::from_secs(15))
            .await
            .expect("a mail arrives within 15s")
    }

    /// Asserts that no further mail arrives for a short while.
    pub async fn assert_no_mail(&self) {
        if let Some(m) = self.smtp.next_within(Duration::from_millis(700)).await {
            panic!("unexpected mail to {:?}: {}", m.to, m.subject);
        }
    }

    /// The confirmation link of a mail (text part); it must point at our HTTP port.
    pub fn link_in(&self, mail: &ReceivedMail) -> String {
        let link = linkify::LinkFinder::new()
            .links(&mail.text)
            .map(|l| l.as_str().to_string())
            .find(|l| l.contains("/verify?token="))
            .unwrap_or_else(|| panic!("no link in mail: {}", mail.text));
        assert!(
            link.starts_with(&format!("{}/verify?token=", self.http_base)),
            "{link}"
        );
        link
    }

    pub fn token_in(&self, mail: &ReceivedMail) -> String {
        let link = self.link_in(mail);
        link.split("token=").nth(1).unwrap().to_string()
    }

    /// The 6-digit code printed in a link mail.
    pub fn code_in(&self, mail: &ReceivedMail) -> String {
        let after = mail
            .text
            .split("code in the app: ")
            .nth(1)
            .unwrap_or_else(|| panic!("no code in mail: {}", mail.text));
        let code: String = after.chars().take(6).collect();
        assert!(
            code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
            "{code:?}"
        );
        code
    }

    pub async fn confirm_code(
        &self,
        user: &str,
        code: &str,
    ) -> Result<pb::ConfirmLinkResponse, tonic::Status> {
        self.grpc
            .clone()
            .confirm_code(pb::ConfirmCodeRequest {
                user_id: user.into(),
                code: code.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn events(
        &self,
        user: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListEventsResponse, tonic::Status> {
        self.grpc
            .clone()
            .list_events(pb::ListEventsRequest {
                user_id: user.into(),
                page_size,
                page_token: page_token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn request_verification(
        &self,
        user: &str,
        email: &str,
    ) -> Result<pb::Flow, tonic::Status> {
        self.grpc
            .clone()
            .request_verification(pb::RequestVerificationRequest {
                user_id: user.into(),
                email: email.into(),
                locale: String::new(),
            })
            .await
            .map(|r| r.into_inner().flow.expect("a flow"))
    }

    pub async fn request_change(&self, user: &str, email: &str) -> Result<pb::Flow, tonic::Status> {
        self.grpc
            .clone()
            .request_change(pb::RequestChangeRequest {
                user_id: user.into(),
                new_email: email.into(),
                locale: String::new(),
            })
            .await
            .map(|r| r.into_inner().flow.expect("a flow"))
    }

    pub async fn confirm(&self, token: &str) -> Result<pb::ConfirmLinkResponse, tonic::Status> {
        self.grpc
            .clone()
            .confirm_link(pb::ConfirmLinkRequest {
                token: token.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn resend(&self, user: &str) -> Result<pb::Flow, tonic::Status> {
        self.grpc
            .clone()
            .resend(pb::ResendRequest {
                user_id: user.into(),
            })
            .await
            .map(|r| r.into_inner().flow.expect("a flow"))
    }

    pub async fn status(&self, user: &str) -> Result<pb::GetStatusResponse, tonic::Status> {
        self.grpc
            .clone()
            .get_status(pb::GetStatusRequest {
                user_id: user.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn cancel(&self, user: &str) -> Result<(), tonic::Status> {
        self.grpc
            .clone()
            .cancel_change(pb::CancelChangeRequest {
                user_id: user.into(),
            })
            .await
            .map(|_| ())
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

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.http_base))
            .send()
            .await
            .unwrap()
    }

    pub async fn post_form(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.http_base))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
    }

    /// Number of rows in a table (to prove that a refused request wrote nothing).
    pub async fn count(&self, table: &str) -> i64 {
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                self.db.get_database_backend(),
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    }

    /// Waits (bounded) until `count(table_where)` is `n`, for what the mail worker records
    /// right after a delivery.
    pub async fn eventually_count(&self, table_where: &str, n: i64) {
        for _ in 0..100 {
            if self.count(table_where).await == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(self.count(table_where).await, n, "{table_where}");
    }

    /// Every table's rows rendered as text, to search for secrets.
    pub async fn dump_database(&self) -> String {
        use emailverify::store::entity::{event, flow, outbox, token, user};
        use sea_orm::EntityTrait;
        format!(
            "{:?}{:?}{:?}{:?}{:?}",
            user::Entity::find().all(&self.db).await.unwrap(),
            flow::Entity::find().all(&self.db).await.unwrap(),
            token::Entity::find().all(&self.db).await.unwrap(),
            outbox::Entity::find().all(&self.db).await.unwrap(),
            event::Entity::find().all(&self.db).await.unwrap(),
        )
    }

    /// Stops the server and waits for it to finish; returns the database to reuse.
    pub async fn stop(mut self) -> (TestDb, Arc<SmtpSink>) {
        self.stop.cancel();
        if let Some(s) = self.server.take() {
            s.await.unwrap().unwrap();
        }
        let db = std::mem::replace(
            &mut self._db,
            TestDb {
                url: String::new(),
                _dir: None,
            },
        );
        (db, self.smtp.clone())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Sends sign-ups `user-<i>` / `u<i>@example.com` for i in 0..n, spread over `clients`,
/// `concurrency` at a time, and asserts every one was accepted.
pub async fn sign_ups(clients: &[EmailVerificationClient<Channel>], n: usize, concurrency: usize) {
    use futures::StreamExt;
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let mut grpc = clients[i % clients.len()].clone();
            async move {
                grpc.request_verification(pb::RequestVerificationRequest {
                    user_id: format!("user-{i}"),
                    email: format!("u{i}@example.com"),
                    locale: String::new(),
                })
                .await
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for r in results {
        r.expect("sign-up accepted");
    }
}

/// The `Retry-After` of a 429 page, in seconds.
pub fn retry_after_secs(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The code of a link mail, in any locale: the line that ends in `: ` and six digits.
pub fn code_line(text: &str) -> String {
    text.lines()
        .filter_map(|l| l.trim_end().rsplit_once(": "))
        .map(|(_, tail)| tail)
        .find(|tail| tail.len() == 6 && tail.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no code in mail: {text}"))
        .to_string()
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
