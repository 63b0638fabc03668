//! A primary and its synchronous streaming standby, both private PostgreSQL servers on
//! loopback ports (see [`super::postgres`]), and [`Proxy`], the test's stand-in for what
//! sends the service to the primary in production (HAProxy with a primary check, PgBouncer
//! repointed by a failover tool, a virtual address): one loopback port the test moves.
//!
//! The primary is made with data checksums (so that `pg_rewind` can later turn it into a
//! standby of the server that replaced it) and runs with `synchronous_standby_names='*'`:
//! a commit is acknowledged only once the standby has it. The standby runs without it, so
//! that once promoted it does not wait for a standby of its own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::postgres::PrivatePostgres;

/// What the primary runs with beyond the test defaults.
const PRIMARY: &str = "-c wal_level=replica -c max_wal_senders=10 -c synchronous_commit=on \
                       -c \"synchronous_standby_names=*\" -c wal_keep_size=1GB";
/// What the standby runs with: it keeps the WAL the old primary will need from it after a
/// failover, to rejoin as its standby.
const STANDBY: &str = "-c wal_keep_size=1GB";

pub struct Pair {
    pub primary: PrivatePostgres,
    pub standby: PrivatePostgres,
}

impl Pair {
    /// Starts the primary, copies it with `pg_basebackup -R` and starts the copy as its
    /// standby; or says why it cannot.
    pub fn start() -> Result<Self, String> {
        let primary = PrivatePostgres::start_with(&["--data-checksums"], PRIMARY)?;
        let standby = PrivatePostgres::standby_of(&primary)?;
        Ok(Self { primary, standby })
    }
}

impl PrivatePostgres {
    /// A streaming standby of `primary`: `pg_basebackup -R`, then started.
    pub fn standby_of(primary: &PrivatePostgres) -> Result<Self, String> {
        let mut standby = Self::empty(STANDBY)?;
        let data = standby.data();
        let port = primary.port().to_string();
        standby.run_as_server_user(
            "pg_basebackup",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-R".as_ref(),
                "-X".as_ref(),
                "stream".as_ref(),
                "-c".as_ref(),
                "fast".as_ref(),
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
            ],
        )?;
        standby.start_on_a_free_port()?;
        Ok(standby)
    }

    /// `kill -9` of the postmaster and of every process it started, as when its machine
    /// dies: nothing is shut down, nothing more is sent to anyone.
    pub fn kill_9(&self) {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .expect("the server runs (postmaster.pid)");
        let postmaster: u32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        let mut pids = vec![postmaster.to_string()];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …: the comm may hold spaces, so read after its ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        let killed = std::process::Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .status()
            .unwrap();
        assert!(killed.success(), "kill -KILL {pids:?}");
    }

    /// `pg_ctl promote`: the standby becomes a primary (waits until it takes writes).
    pub fn promote(&self) -> Result<(), String> {
        let data = self.data();
        self.run_as_server_user(
            "pg_ctl",
            &[
                "promote".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
            ],
        )
    }

    /// A server that died (`kill_9`) made a standby of `primary` with `pg_rewind -R`
    /// (crash recovery first, then its diverged WAL rewound), then started, as a plain
    /// standby (asynchronous: `primary` does not wait for it).
    pub fn rejoin_as_standby_of(&mut self, primary: &PrivatePostgres) -> Result<(), String> {
        let data = self.data();
        let source = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            primary.port()
        );
        let target = format!("--target-pgdata={}", data.display());
        let source = format!("--source-server={source}");
        self.run_as_server_user(
            "pg_rewind",
            &[target.as_ref(), source.as_ref(), "-R".as_ref()],
        )?;
        self.set_settings(STANDBY);
        self.ctl("start")
    }
}

/// A loopback TCP port that forwards to the server the test points it at, and cuts every
/// session it forwards when repointed (as HAProxy's `on-marked-down shutdown-sessions`
/// does): what a failover tool moves.
pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<(Option<u16>, CancellationToken)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards to the server on loopback port `to`.
    pub async fn start(to: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new((Some(to), CancellationToken::new())));
        let task = tokio::spawn({
            let target = target.clone();
            async move {
                // Ends when the proxy is dropped (the task is aborted).
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let (port, cut) = {
                        let t = target.lock().unwrap();
                        (t.0, t.1.clone())
                    };
                    tokio::spawn(async move {
                        let Some(port) = port else { return };
                        let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.cancelled() => {}
                        }
                    });
                }
            }
        });
        Self { addr, target, task }
    }

    /// The database `db` through this proxy.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@{}/{db}", self.addr)
    }

    /// From now on forwards to loopback port `to` (`None`: closes what it accepts); every
    /// session open now is cut.
    pub fn repoint(&self, to: Option<u16>) {
        let mut t = self.target.lock().unwrap();
        t.1.cancel();
        *t = (to, CancellationToken::new());
    }
}

impl Proxy {
    /// From now on forwards new sessions to loopback port `to`; the sessions open now stay
    /// with the server they reached (a proxy without `shutdown-sessions`, or a virtual
    /// address moved while the old server still answers).
    pub fn repoint_keeping_sessions(&self, to: u16) {
        self.target.lock().unwrap().0 = Some(to);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.target.lock().unwrap().1.cancel();
    }
}
