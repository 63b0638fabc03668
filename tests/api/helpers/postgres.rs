//! Where the PostgreSQL cases get their server, and what happens when there is none.
//!
//! The server, first found first used: `TEST_DATABASE_URL` (a server where the tests may
//! `CREATE DATABASE`); else a private throwaway server started from PostgreSQL's installed
//! server binaries (`initdb`, `pg_ctl`), one for the whole test binary; else a testcontainers
//! PostgreSQL when a Docker engine answers. With none of them a PostgreSQL case cannot run:
//! under `CI=true` it fails; elsewhere it returns at once and the skip is counted and said
//! after the test summary (libtest has no way to mark a test ignored at run time, so the
//! summary's "passed" includes these cases: the line after it says how many did not run).
//!
//! A private server lives in a temporary folder (data, unix socket, log) and listens on a free
//! loopback port. A watchdog process, started before `initdb`, waits for the end of a pipe
//! that only this process holds: when the test process ends, however it ends (normal exit, a
//! failed test, Ctrl-C, kill -9), the kernel closes the pipe and the watchdog stops the server
//! and deletes the folder. It ignores terminal signals and has its own process group, so a
//! Ctrl-C does not take it down first. Only killing the watchdog itself (or the machine) can
//! leave a server behind: its folder is `/tmp/emailverify-pg-*`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use tokio::sync::OnceCell;

/// The server the PostgreSQL cases create their databases on, if there is one.
pub async fn postgres_admin_url() -> Option<String> {
    static URL: OnceCell<Option<String>> = OnceCell::const_new();
    URL.get_or_init(|| async {
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            return Some(url);
        }
        let private = tokio::task::spawn_blocking(PrivatePostgres::start)
            .await
            .expect("starting a private PostgreSQL does not panic");
        match private {
            Ok(pg) => {
                let url = pg.url();
                say(&format!(
                    "PostgreSQL cases: no TEST_DATABASE_URL, so a private server from {} on {url}",
                    pg.bin.display()
                ));
                let _ = SHARED.set(pg);
                Some(url)
            }
            Err(why) => {
                let url = container_url().await;
                if url.is_none() {
                    let _ = UNAVAILABLE.set(format!(
                        "no TEST_DATABASE_URL, no private server ({why}), no Docker engine"
                    ));
                }
                url
            }
        }
    })
    .await
    .clone()
}

/// The private server of the whole test binary: never dropped, stopped by its watchdog.
static SHARED: OnceLock<PrivatePostgres> = OnceLock::new();
/// Why no PostgreSQL could be found.
static UNAVAILABLE: OnceLock<String> = OnceLock::new();

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

/// Whether a PostgreSQL case can run. When it cannot: fails under `CI=true`, else records
/// the skip (said after the summary) and returns false.
pub async fn postgres_available() -> bool {
    if postgres_admin_url().await.is_some() {
        return true;
    }
    skip_postgres_case(UNAVAILABLE.get().map_or("no PostgreSQL", |s| s.as_str()));
    false
}

/// Records that a PostgreSQL case did not run and why; under `CI=true`, fails instead.
pub fn skip_postgres_case(why: &str) {
    assert!(
        std::env::var("CI").map(|v| v != "true").unwrap_or(true),
        "CI=true but a PostgreSQL case cannot run: {why} (set TEST_DATABASE_URL, see .ci/run)"
    );
    static SKIPS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());
    let first = {
        let mut skips = SKIPS.lock().unwrap_or_else(|e| e.into_inner());
        let first = skips.is_empty();
        *skips.entry(why.to_string()).or_default() += 1;
        first
    };
    eprintln!("SKIPPED (no PostgreSQL): {why}");
    if first {
        say(&format!("PostgreSQL cases are SKIPPED: {why}"));
        extern "C" fn say_skips_after_the_summary() {
            let skips = SKIPS.lock().unwrap_or_else(|e| e.into_inner());
            for (why, n) in skips.iter() {
                say(&format!(
                    "warning: {n} PostgreSQL test case(s) did NOT run ({why}); the test result \
                     above counts them as passed. Set TEST_DATABASE_URL, or install \
                     PostgreSQL's server binaries (initdb, pg_ctl)."
                ));
            }
        }
        // SAFETY: `atexit` only stores the pointer of a function that lives as long as the
        // program; the function cannot unwind (it only formats and writes, ignoring errors).
        unsafe {
            atexit(say_skips_after_the_summary);
        }
    }
}

unsafe extern "C" {
    /// The C library's exit hook: runs after libtest has printed its summary and returned.
    fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
}

/// One line on the real standard error, past libtest's output capture: said once per run.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A PostgreSQL server of the tests' own: initdb in a temporary folder, a free loopback port,
/// its unix socket in the folder. Dropping it stops it and deletes the folder; so does its
/// watchdog when the process ends without dropping it.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Running as root: the server runs as the `postgres` user (initdb refuses root).
    as_postgres_user: bool,
    /// `-c name=value …` added to the server's command line.
    settings: String,
    watchdog: Option<Child>,
}

impl PrivatePostgres {
    /// Starts a server, or says why it cannot.
    pub fn start() -> Result<Self, String> {
        Self::start_with(&[], "")
    }

    /// Starts a server made by `initdb` with the `initdb` arguments added, run with the
    /// `settings` added to its command line (`-c name=value …`, after the defaults).
    pub fn start_with(initdb: &[&str], settings: &str) -> Result<Self, String> {
        let mut pg = Self::empty(settings)?;
        let data = pg.data();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "-D".as_ref(),
            data.as_os_str(),
            "-A".as_ref(),
            "trust".as_ref(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "-E".as_ref(),
            "UTF8".as_ref(),
            "--no-sync".as_ref(),
        ];
        args.extend(initdb.iter().map(|a| std::ffi::OsStr::new(*a)));
        pg.run_as_server_user("initdb", &args)?;
        pg.start_on_a_free_port()?;
        Ok(pg)
    }

    /// A folder for a server (and its watchdog), no data in it yet.
    pub(super) fn empty(settings: &str) -> Result<Self, String> {
        let bin = server_binaries().ok_or(
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH",
        )?;
        let as_postgres_user = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("emailverify-pg-")
            .tempdir()
            .map_err(|e| format!("temporary folder: {e}"))?
            .keep();
        let mut pg = Self {
            watchdog: None,
            bin,
            dir,
            port: 0,
            as_postgres_user,
            settings: settings.to_owned(),
        };
        // From here on, whatever happens, the watchdog cleans up.
        pg.watchdog = Some(pg.spawn_watchdog()?);
        if as_postgres_user {
            run(Command::new("chown").arg("postgres").arg(&pg.dir))
                .map_err(|e| format!("running as root needs a `postgres` user: {e}"))?;
        }
        Ok(pg)
    }

    /// Starts the server in the folder on a free loopback port.
    pub(super) fn start_on_a_free_port(&mut self) -> Result<(), String> {
        // The port is free when chosen, not necessarily when the server binds it.
        let mut last = String::new();
        for _ in 0..3 {
            self.port = super::free_port();
            match self.ctl("start") {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The settings this server runs with beyond the defaults.
    pub(super) fn set_settings(&mut self, settings: &str) {
        self.settings = settings.to_owned();
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl start | stop | restart`, waiting until it is done.
    pub fn ctl(&self, action: &str) -> Result<(), String> {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 {}",
            self.port,
            self.dir.display(),
            self.settings
        );
        let mut args = vec![
            action.as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
            "-w".as_ref(),
            "-t".as_ref(),
            "60".as_ref(),
            "-m".as_ref(),
            "fast".as_ref(),
        ];
        if action != "stop" {
            args.extend(["-o".as_ref(), opts.as_ref(), "-l".as_ref(), log.as_os_str()]);
        }
        self.run_as_server_user("pg_ctl", &args).map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}\nserver log:\n{log}")
        })
    }

    pub(super) fn run_as_server_user(
        &self,
        program: &str,
        args: &[&std::ffi::OsStr],
    ) -> Result<(), String> {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args);
        run(&mut cmd).map_err(|e| format!("{}: {e}", program.display()))
    }

    /// A process that waits for the end of its standard input, then stops the server and
    /// deletes the folder.
    fn spawn_watchdog(&self) -> Result<Child, String> {
        use std::os::unix::process::CommandExt;
        const SCRIPT: &str = r#"
trap '' INT HUP TERM QUIT
cat >/dev/null
if [ -f "$1/data/postmaster.pid" ]; then
  if [ "$3" = 1 ]; then
    runuser -u postgres -- "$2" stop -D "$1/data" -m immediate -w -t 30
  else
    "$2" stop -D "$1/data" -m immediate -w -t 30
  fi
fi
rm -rf "$1"
"#;
        Command::new("sh")
            .args(["-c", SCRIPT, "emailverify-pg-watchdog"])
            .arg(&self.dir)
            .arg(self.bin.join("pg_ctl"))
            .arg(if self.as_postgres_user { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("watchdog: {e}"))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // A fast stop first (the watchdog's is immediate), then the watchdog cleans up.
        let _ = self.ctl("stop");
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// Where `initdb` and `pg_ctl` are: the newest /usr/lib/postgresql/<version>/bin (Debian,
/// Ubuntu), else PATH (Fedora, Homebrew, …).
fn server_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_both(dir))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a command to its end; its output is kept for the error.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
