//! The command line: `emailverify serve` runs the service, `migrate` applies (or lists)
//! migrations, `check-config` checks settings, database and mail server, `probe` asks a
//! running service whether it is ready, and `outbox retry-dead` gives dead mails another
//! chance. `main` only parses and runs it.

use std::sync::Arc;

use clap::Subcommand;

use crate::clock::SystemClock;
use crate::settings::{Config, Settings};
use crate::startup::Application;
use crate::store::Store;

#[derive(clap::Parser)]
#[command(
    name = "emailverify",
    version,
    about = "Email ownership verification for the wallet"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC API, the HTTP link pages and the mail worker.
    Serve(Box<Settings>),
    /// Operate on the mail outbox.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Apply pending database migrations and exit (`--status`: only list them).
    Migrate {
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "sqlite://data/emailverify.db?mode=rwc"
        )]
        database_url: String,
        /// List applied and pending migrations; change nothing.
        #[arg(long)]
        status: bool,
    },
    /// Validate the settings and reach the database and the mail server; exit non-zero with
    /// the setting to fix (a pre-deploy step for pipelines).
    CheckConfig(Box<Settings>),
    /// Is the service on this host ready? `/readyz` answers 200 and gRPC health SERVING;
    /// exit non-zero saying which is not (what a rolling deploy waits on).
    Probe(crate::probe::Probe),
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Give dead mails another chance: notices are queued again; a dead link mail of a
    /// still-pending flow is replaced by a fresh link (its old link was erased).
    RetryDead(Box<Settings>),
}

impl Cli {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve(settings) => {
                crate::telemetry::init(&settings.log_format);
                let config = settings.resolve()?;
                raise_open_files_limit(&config);
                if let Some(dir) = sqlite_dir(&config.database_url) {
                    std::fs::create_dir_all(dir)?;
                }
                let app = Application::build(config, Arc::new(SystemClock)).await?;
                let stop = app.stop_handle();
                tokio::spawn(async move {
                    shutdown_signal().await;
                    tracing::info!("shutdown requested");
                    stop.cancel();
                });
                app.run_until_stopped().await
            }
            Command::Outbox(OutboxCommand::RetryDead(settings)) => {
                crate::telemetry::init(&settings.log_format);
                let config = settings.resolve()?;
                let core =
                    crate::startup::core_for(&config, Arc::new(SystemClock), Default::default())
                        .await?;
                let report = core.retry_dead_mail().await?;
                println!(
                    "requeued {} notice(s), sent {} fresh link(s), left {} dead (their flow has ended)",
                    report.requeued, report.relinked, report.left_dead
                );
                Ok(())
            }
            Command::Migrate {
                database_url,
                status,
            } => {
                crate::telemetry::init("pretty");
                if let Some(dir) = sqlite_dir(&database_url) {
                    std::fs::create_dir_all(dir)?;
                }
                let store = Store::connect(&database_url).await?;
                if status {
                    for (name, applied) in store.migration_status().await? {
                        println!("{} {name}", if applied { "applied" } else { "pending" });
                    }
                    return Ok(());
                }
                store.migrate().await?;
                tracing::info!("migrations applied");
                Ok(())
            }
            Command::Probe(probe) => probe.run().await,
            Command::CheckConfig(settings) => {
                // Warnings about the settings (e.g. a generated token key) are part of the check.
                crate::telemetry::init(&settings.log_format);
                let config = settings.resolve()?;
                println!("ok   settings");
                let store = Store::connect(&config.database_url)
                    .await
                    .map_err(|e| anyhow::anyhow!("DATABASE_URL: cannot connect: {e}"))?;
                let pending: Vec<String> = store
                    .migration_status()
                    .await
                    .map_err(|e| anyhow::anyhow!("DATABASE_URL: cannot read the migrations: {e}"))?
                    .into_iter()
                    .filter(|(_, applied)| !applied)
                    .map(|(name, _)| name)
                    .collect();
                println!(
                    "ok   database reachable; {} pending migration(s) {pending:?}",
                    pending.len()
                );
                config
                    .transport
                    .check()
                    .await
                    .map_err(|e| anyhow::anyhow!("EMAILVERIFY_MAIL_URL: {e}"))?;
                println!("ok   mail: {}", config.transport.describe());
                Ok(())
            }
        }
    }
}

/// Raises the soft open-files limit to the hard one (as Go's runtime does): every connection
/// is a file descriptor, and the usual soft default (1024) is below what the connection caps
/// allow. Says so at WARN when even the hard limit is below that: past it, accepts fail
/// (logged at WARN, backed off) and new connections wait.
fn raise_open_files_limit(config: &Config) {
    // Both public ports full, the admin port, the database pool, mail and the rest.
    let wanted = 2 * config.connections.max_connections as u64 + u64::from(config.db_pool) + 128;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open-files limit is below what EMAILVERIFY_MAX_CONNECTIONS allows on both ports; raise it (LimitNOFILE, ulimit -n) or lower the setting"
        ),
        Ok(limit) => tracing::debug!(limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
}

/// The folder of a relative or absolute SQLite file, so the embedded default just works.
fn sqlite_dir(url: &str) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("sqlite://")?.split('?').next()?;
    let parent = std::path::Path::new(path).parent()?;
    (!parent.as_os_str().is_empty()).then(|| parent.to_path_buf())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
