//! Delivery under process faults, with real `emailverify serve` processes: a kill -9 in the
//! middle of a drain, and three processes sharing one outbox on PostgreSQL.

use std::collections::HashMap;
use std::time::Duration;

use emailverify::grpc::pb;

use crate::helpers::{Backend, SmtpSink, fresh_database, sign_ups};
use crate::process::serve;

/// Receives until `distinct` different Message-IDs arrived (and a quiet moment after),
/// counting how often each arrived; if they do not, fails with a picture of the outbox.
async fn receive(
    smtp: &SmtpSink,
    distinct: usize,
    counts: &mut HashMap<String, u32>,
    db_url: &str,
) {
    use sea_orm::{ConnectionTrait, Statement};
    while counts.len() < distinct {
        match smtp.next_within(Duration::from_secs(60)).await {
            Some(mail) => *counts.entry(mail.message_id).or_default() += 1,
            None => {
                let conn = sea_orm::Database::connect(db_url).await.unwrap();
                let rows = conn
                    .query_all_raw(Statement::from_string(
                        conn.get_database_backend(),
                        "SELECT state, attempts, claimed_by IS NULL AS unclaimed, last_error, COUNT(*) AS n FROM outbox GROUP BY state, attempts, claimed_by IS NULL, last_error".to_string(),
                    ))
                    .await
                    .unwrap();
                let picture: Vec<String> = rows
                    .iter()
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
                    .collect();
                panic!(
                    "only {} of {distinct} distinct mails arrived; outbox: {picture:#?}",
                    counts.len()
                );
            }
        }
    }
    while let Some(mail) = smtp.next_within(Duration::from_secs(2)).await {
        *counts.entry(mail.message_id).or_default() += 1;
    }
}

const DRAIN: usize = 500;

async fn a_kill_9_in_the_middle_of_a_drain_loses_nothing(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let key = emailverify::domain::Keyring::generate_key_base64();
    let env = [
        ("EMAILVERIFY_MAIL_LEASE", "2s"),
        ("EMAILVERIFY_MAIL_RETRY_BASE", "200ms"),
    ];
    smtp.down();
    let first = serve(&db.url, &smtp, &key, &env).await;
    sign_ups(std::slice::from_ref(&first.grpc), DRAIN, 16).await;

    // Let the drain start, then kill the process without warning.
    smtp.up();
    let mut counts = HashMap::new();
    while counts.len() < DRAIN / 5 {
        let mail = smtp
            .next_within(Duration::from_secs(60))
            .await
            .expect("the drain runs");
        *counts.entry(mail.message_id).or_default() += 1;
    }
    let mut child = first.child;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let before_kill = counts.len();

    let second = serve(&db.url, &smtp, &key, &env).await;
    receive(&smtp, DRAIN, &mut counts, &db.url).await;
    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 after {before_kill} of {DRAIN} mails: all {} arrived, {duplicates} duplicate(s)",
        counts.len()
    );
    assert_eq!(counts.len(), DRAIN, "every committed sign-up got its mail");
    // Only mails in flight at the kill (handed to SMTP, not yet marked sent) can go twice.
    let in_flight = emailverify::mail::outbox::SENDS_IN_FLIGHT as u32;
    assert!(
        duplicates <= in_flight,
        "{duplicates} duplicates, more than the {in_flight} sends in flight"
    );
    assert!(second.terminate().await.0.success());
}

crate::on_both_backends!(a_kill_9_in_the_middle_of_a_drain_loses_nothing);

const SPREAD: usize = 1000;

/// Three processes on one PostgreSQL share the outbox: every mail goes out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_postgres_send_a_thousand_distinct_mails() {
    if !crate::helpers::postgres_available().await {
        return;
    }
    let db = fresh_database(Backend::Postgres).await;
    let smtp = SmtpSink::start().await;
    let key = emailverify::domain::Keyring::generate_key_base64();
    let env = [("EMAILVERIFY_LIMIT_PER_USER", "100/1h")];
    let a = serve(&db.url, &smtp, &key, &env).await;
    let b = serve(&db.url, &smtp, &key, &env).await;
    let c = serve(&db.url, &smtp, &key, &env).await;

    sign_ups(
        &[a.grpc.clone(), b.grpc.clone(), c.grpc.clone()],
        SPREAD,
        24,
    )
    .await;
    let mut counts = HashMap::new();
    receive(&smtp, SPREAD, &mut counts, &db.url).await;

    let duplicates: u32 = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "3 processes, {SPREAD} sign-ups: {} distinct mails, {duplicates} duplicate(s)",
        counts.len()
    );
    assert_eq!(counts.len(), SPREAD);
    assert_eq!(duplicates, 0, "a mail went out twice");
    for p in [a, b, c] {
        assert!(p.terminate().await.0.success());
    }
}

/// A PostgreSQL server of the test's own (initdb in a temp folder, its own port), so the
/// test can restart it without disturbing the other tests' server.
struct OwnPostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("pg_ctl").exists())?;
        let dir = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        std::process::Command::new("chown")
            .args(["postgres", dir.path().to_str()?])
            .status()
            .ok()?;
        let data = dir.path().join("data");
        let ok = as_postgres(
            &bin.join("initdb"),
            &["-D", data.to_str()?, "-A", "trust", "-U", "postgres"],
        );
        let pg = Self { bin, dir, port };
        (ok && pg.ctl("start")).then_some(pg)
    }

    fn ctl(&self, action: &str) -> bool {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut args = vec![action, "-D", data.to_str().unwrap(), "-w", "-m", "fast"];
        if action != "stop" {
            args.extend(["-o", opts.as_str(), "-l"]);
            args.push(Box::leak(
                self.dir
                    .path()
                    .join("log")
                    .display()
                    .to_string()
                    .into_boxed_str(),
            ));
        }
        as_postgres(&self.bin.join("pg_ctl"), &args)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.ctl("stop");
    }
}

fn as_postgres(program: &std::path::Path, args: &[&str]) -> bool {
    std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// PostgreSQL restarted under load: RPCs fail only with UNAVAILABLE (safe to retry), the
/// service recovers without a restart, and every sign-up that succeeded gets its mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_gives_unavailable_only_and_loses_no_mail() {
    let Some(pg) = OwnPostgres::start() else {
        assert!(
            std::env::var("CI").map(|v| v != "true").unwrap_or(true),
            "CI=true but no PostgreSQL server binaries to start a private server"
        );
        eprintln!(
            "skipping: cannot start a private PostgreSQL (needs its server binaries and root)"
        );
        return;
    };
    let smtp = SmtpSink::start().await;
    let db = crate::helpers::TestDb::at(pg.url());
    let mut settings = crate::helpers::test_settings(&db, &smtp);
    settings.limit_per_user = "1000/1h".into();
    let app = crate::helpers::start(db, smtp.clone(), settings, Default::default()).await;

    let load = {
        let grpc = app.grpc.clone();
        tokio::spawn(async move {
            let (mut ok, mut unavailable, mut other) = (0u32, 0u32, Vec::new());
            let started = std::time::Instant::now();
            let mut i = 0u32;
            while started.elapsed() < Duration::from_secs(6) {
                let batch = (0..8).map(|k| {
                    let mut g = grpc.clone();
                    let n = i + k;
                    async move {
                        g.request_verification(pb::RequestVerificationRequest {
                            user_id: format!("user-{n}"),
                            email: format!("u{n}@example.com"),
                            locale: String::new(),
                        })
                        .await
                    }
                });
                for r in futures::future::join_all(batch).await {
                    match r {
                        Ok(_) => ok += 1,
                        Err(s) if s.code() == tonic::Code::Unavailable => unavailable += 1,
                        Err(s) => other.push(format!("{:?}: {}", s.code(), s.message())),
                    }
                }
                i += 8;
            }
            (ok, unavailable, other)
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(pg.ctl("restart"), "PostgreSQL restarted");
    let (ok, unavailable, other) = load.await.unwrap();
    eprintln!(
        "PostgreSQL restart under load: {ok} sign-ups OK, {unavailable} UNAVAILABLE, {} other",
        other.len()
    );
    assert!(other.is_empty(), "errors other than UNAVAILABLE: {other:?}");
    assert!(ok > 0);

    // Recovered without restarting the service: a new request works, and every OK
    // sign-up's mail arrives.
    let after = app
        .request_verification("after-restart", "after@example.com")
        .await;
    let after = match after {
        Ok(f) => f,
        Err(_) => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            app.request_verification("after-restart", "after@example.com")
                .await
                .expect("recovered")
        }
    };
    assert!(!after.flow_id.is_empty());
    let mut counts = HashMap::new();
    receive(&smtp, ok as usize + 1, &mut counts, &pg.url()).await;
    // A request answered UNAVAILABLE may still have committed (its COMMIT reached the server
    // but the answer was lost in the restart): its mail then goes out too. That is why
    // UNAVAILABLE is "safe to retry": a retry returns the same flow and sends no second mail.
    let delivered = counts.len();
    assert!(
        delivered > ok as usize && delivered <= (ok + 1 + unavailable) as usize,
        "{delivered} mails for {ok} accepted (+1) and {unavailable} unavailable sign-ups"
    );
    assert_eq!(app.get("/readyz").await.status(), 200);
}
