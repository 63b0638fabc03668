//! The real binary as an operator runs it: `emailverify <args>` with nothing but the
//! settings a test gives it, and `emailverify serve` on free loopback ports, reached through
//! the same [`Service`] view as an in-process app.
//!
//! Each serving process has a recorder of its own (metrics, logs), so what a test reads
//! there comes from that test alone.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::{Service, SmtpSink, poll_until};

const BIN: &str = env!("CARGO_BIN_EXE_emailverify");

/// How long a process may take to stop on SIGTERM unless a test says otherwise.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// `emailverify <args>` with an empty environment (only PATH), in the temp folder.
pub fn command(args: &[&str]) -> Command {
    command_under(&[], args)
}

/// As [`command`], run by `wrapper` (e.g. `["prlimit", "--nofile=64", "--"]`; empty: none).
pub fn command_under(wrapper: &[&str], args: &[&str]) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((program, before)) => {
            let mut cmd = Command::new(program);
            cmd.args(before).arg(BIN);
            cmd
        }
        None => Command::new(BIN),
    };
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

/// How a command that ran to its end ended, and what it said.
pub struct Ran {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end (at most a minute).
pub async fn run(cmd: &mut Command) -> Ran {
    run_within(cmd, Duration::from_secs(60)).await
}

/// Runs `cmd` to its end, at most `limit`.
pub async fn run_within(cmd: &mut Command, limit: Duration) -> Ran {
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("the command ends within {limit:?}"))
        .unwrap();
    Ran {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `cmd` to its end; it must succeed (else the test fails with what it said).
pub async fn run_ok(cmd: &mut Command) -> Ran {
    let ran = run(cmd).await;
    assert!(
        ran.status.success(),
        "{:?} failed ({}): {}{}",
        cmd.as_std().get_args().collect::<Vec<_>>(),
        ran.status,
        ran.stdout,
        ran.stderr
    );
    ran
}

/// A running `emailverify serve` process on free loopback ports. Dropped, it is killed;
/// dropped by a failing test with `TEST_LOG` set, it prints what the process logged.
pub struct Served {
    pub service: Service,
    child: tokio::process::Child,
    /// Everything the process logs, read as it comes: an unread pipe would fill up and
    /// stall the process in the middle of a log line.
    logs: Arc<Mutex<String>>,
    readers: Option<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for Served {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

/// Starts `emailverify serve` on `db_url`, sending through `smtp`, with the token key `key`
/// and the `extra` settings; returns once `/readyz` answers 200.
pub async fn serve(db_url: &str, smtp: &SmtpSink, key: &str, extra: &[(&str, &str)]) -> Served {
    serve_with(db_url, smtp, key, extra, &[]).await
}

/// As [`serve`], run by `wrapper` (see [`command_under`]).
pub async fn serve_with(
    db_url: &str,
    smtp: &SmtpSink,
    key: &str,
    extra: &[(&str, &str)],
    wrapper: &[&str],
) -> Served {
    let (grpc_port, http_port, admin_port) = (free_port(), free_port(), free_port());
    let base = format!("http://127.0.0.1:{http_port}");
    let mut cmd = command_under(wrapper, &["serve"]);
    cmd.env("DATABASE_URL", db_url)
        .env("EMAILVERIFY_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("EMAILVERIFY_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("EMAILVERIFY_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env("EMAILVERIFY_PUBLIC_URL", &base)
        .env("EMAILVERIFY_MAIL_URL", smtp.url())
        .env("EMAILVERIFY_TOKEN_KEYS", key)
        // Plain log lines, for a failing test's output.
        .env("NO_COLOR", "1");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let readers = tokio::spawn({
        let logs = logs.clone();
        async move {
            tokio::join!(collect(out, logs.clone()), collect(err, logs));
        }
    });
    let served = Served {
        service: Service::connect(
            format!("127.0.0.1:{grpc_port}").parse().unwrap(),
            base.clone(),
            db_url.to_string(),
        )
        .await
        .with_admin(format!("127.0.0.1:{admin_port}").parse().unwrap()),
        child,
        logs,
        readers: Some(readers),
    };
    let (http, ready) = (&served.http, format!("{base}/readyz"));
    let became_ready = poll_until(Duration::from_secs(30), async || {
        let resp = http.get(&ready).send().await.ok()?;
        (resp.status() == 200).then_some(())
    })
    .await;
    if became_ready.is_none() {
        let logs = served.logs.lock().unwrap().clone();
        panic!("the service did not become ready within 30s; it logged:\n{logs}");
    }
    served
}

async fn collect(pipe: impl AsyncRead + Unpin, logs: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut logs = logs.lock().unwrap();
        logs.push_str(&line);
        logs.push('\n');
    }
}

impl Served {
    /// SIGTERM, then the exit status and everything the process logged.
    pub async fn terminate(self) -> (std::process::ExitStatus, String) {
        self.terminate_within(STOP_WAIT).await
    }

    /// SIGTERM; the process must exit within `wait`.
    pub async fn terminate_within(mut self, wait: Duration) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("the process still runs").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(wait, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the service stops within {wait:?} of SIGTERM"))
            .unwrap();
        (status, self.logs_to_the_end().await)
    }

    /// What the process logged so far.
    /// The process's resident set size now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("the process still runs");
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// kill -9: the process ends at once, whatever it was doing.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    async fn logs_to_the_end(&mut self) -> String {
        if let Some(readers) = self.readers.take() {
            let _ = readers.await;
        }
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if std::thread::panicking() && super::test_log() {
            let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "--- what emailverify serve (pid {:?}) logged ---\n{logs}--- end ---",
                self.child.id()
            );
        }
    }
}

/// A loopback port that was free a moment ago (for a process that binds it itself), and
/// never one this test run handed out before: the kernel may offer a port again as soon as
/// the probe closes it, before the first test's process has bound it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no loopback port that was not handed out before, in 1000 tries");
}

/// `N` service processes on one fresh PostgreSQL database, sharing one SMTP sink and one
/// token key, each with the `env` settings (started in turn: the first one migrates).
pub struct Replicas<const N: usize> {
    pub db: super::TestDb,
    pub smtp: Arc<SmtpSink>,
    pub served: [Served; N],
}

/// What the several-replica tests start from; `None` when no PostgreSQL case can run here
/// (said after the summary; under `CI=true` it fails instead).
pub async fn replicas<const N: usize>(env: &[(&str, &str)]) -> Option<Replicas<N>> {
    if !super::postgres_available().await {
        return None;
    }
    let db = super::fresh_database(super::Backend::Postgres).await;
    let smtp = SmtpSink::start().await;
    let key = emailverify::domain::Keyring::generate_key_base64();
    let mut served = Vec::with_capacity(N);
    for _ in 0..N {
        served.push(serve(&db.url, &smtp, &key, env).await);
    }
    let Ok(served) = <[Served; N]>::try_from(served) else {
        unreachable!("{N} processes were started")
    };
    Some(Replicas { db, smtp, served })
}
