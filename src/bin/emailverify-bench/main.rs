//! Load generator: drives RequestVerification, then ConfirmLink of the tokens read back
//! from a local SMTP sink, over gRPC against a release `emailverify serve` process, and
//! reports requests/s, p50/p99 latency, mails/s, commit-to-SMTP latency and the service's
//! peak RSS. See BENCHMARKS.md for how the figures there were made.
//!
//!   cargo build --release
//!   target/release/emailverify-bench --database-url postgres://postgres@127.0.0.1/bench --concurrency 64

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use emailverify::grpc::pb::{self, EmailVerificationClient};
use futures::StreamExt;

#[derive(Parser)]
#[command(about = "Load generator for emailverify")]
struct Args {
    /// Database of the service under test (a fresh one: the bench creates users).
    #[arg(long)]
    database_url: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Sign-ups to send (and then links to confirm).
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// PostgreSQL connections of the service (EMAILVERIFY_DB_POOL).
    #[arg(long, default_value_t = 32)]
    db_pool: u32,
    /// Sign-ups sent (and not measured) before the measured ones, so that the service's
    /// connection pool and prepared statements are warm, as pgbench's are: it opens all its
    /// connections before it starts the clock.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Soak mode: sign-ups per second, held for `--duration` (see `soak.rs`).
    #[arg(long)]
    rate: Option<f64>,
    /// How long the soak holds its rate.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// In soak mode, every how many-th mail's link is confirmed.
    #[arg(long, default_value_t = 2)]
    confirm_every: usize,
    /// Timing mode: this many rounds of refusals to a known and to unknown users (see
    /// `timing.rs`).
    #[arg(long)]
    timing: Option<usize>,
    /// The service's mail URL; default: this bench's SMTP sink.
    #[arg(long)]
    mail_url: Option<String>,
    /// Burst mode: keep a WatchEvents watcher connected and report the feed (`watch.rs`).
    #[arg(long)]
    watch: bool,
    /// Idle-watchers mode: sign-ups with no watcher, then with this many WatchEvents
    /// watchers open that never read (`idle.rs`).
    #[arg(long)]
    idle_watchers: Option<usize>,
    /// The service binary.
    #[arg(long, default_value = "target/release/emailverify")]
    service: String,
    /// Run the service on these CPUs only (`taskset -c`), e.g. `1` (run the bench itself
    /// under `taskset -c 0`): the two do not take each other's core.
    #[arg(long)]
    service_cpus: Option<String>,
    /// Each round trip to the database takes this much longer (a relay holds the
    /// database's answers: `delay.rs`), as with a database in another zone; e.g. `1ms`.
    #[arg(long, value_parser = humantime::parse_duration)]
    db_delay: Option<Duration>,
    /// The local PostgreSQL's postmaster pid: report its CPU over the measured phases,
    /// the backends serving `--database-url` apart from the rest (`pgcpu.rs`).
    #[arg(long)]
    pg_postmaster: Option<u32>,
}

mod delay;
mod idle;
mod pgcpu;
mod procfs;
mod sink;
mod soak;
mod timing;
mod watch;

use procfs::{cpu_seconds, rss_kb};
use sink::{Inbox, start_sink};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let smtp = start_sink(inbox.clone()).await?;

    let database_url = match args.db_delay {
        Some(delay) => delay::delayed_database(&args.database_url, delay).await?,
        None => args.database_url.clone(),
    };
    let grpc_port = free_port()?;
    let http_port = free_port()?;
    let mut command = match &args.service_cpus {
        Some(cpus) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", cpus, &args.service]);
            c
        }
        None => tokio::process::Command::new(&args.service),
    };
    let mut child = command
        .arg("serve")
        .env("DATABASE_URL", &database_url)
        .env("EMAILVERIFY_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("EMAILVERIFY_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env(
            "EMAILVERIFY_ADMIN_ADDR",
            format!("127.0.0.1:{}", free_port()?),
        )
        .env(
            "EMAILVERIFY_PUBLIC_URL",
            format!("http://127.0.0.1:{http_port}"),
        )
        .env(
            "EMAILVERIFY_MAIL_URL",
            args.mail_url.clone().unwrap_or(format!("smtp://{smtp}")),
        )
        .env(
            "EMAILVERIFY_TOKEN_KEYS",
            emailverify::domain::Keyring::generate_key_base64(),
        )
        .env("EMAILVERIFY_LIMIT_PER_USER", "1000/1h")
        .env("EMAILVERIFY_DB_POOL", args.db_pool.to_string())
        .env(
            "EMAILVERIFY_MAX_WATCHERS",
            (args.idle_watchers.unwrap_or(0) + 256).to_string(),
        )
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().unwrap_or_default();
    // Until the service answers: at most 60 s, and not a moment after it exited (e.g. a
    // port taken between `free_port` and its bind), which would otherwise hang the run.
    let ready_by = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        match tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))?
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(e) => {
                if let Some(status) = child.try_wait()? {
                    anyhow::bail!("the service exited before it answered: {status}");
                }
                if Instant::now() > ready_by {
                    anyhow::bail!("the service did not answer within 60 s: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let client = EmailVerificationClient::new(channel);
    let run = uuid::Uuid::now_v7().simple().to_string();

    // Phase 0: warm-up, not measured (its mails are not counted either).
    let sign_up = |i: usize| {
        let mut c = client.clone();
        let email = format!("u{i}.{run}@bench.example");
        let user_id = format!("bench-{run}-{i}");
        async move {
            let t = Instant::now();
            c.request_verification(pb::RequestVerificationRequest {
                user_id,
                email: email.clone(),
                locale: String::new(),
            })
            .await
            .expect("sign-up accepted");
            (email, t.elapsed(), Instant::now())
        }
    };
    let warm: Vec<String> = futures::stream::iter(args.requests..args.requests + args.warmup)
        .map(sign_up)
        .buffer_unordered(args.concurrency)
        .map(|(email, _, _)| email)
        .collect()
        .await;
    let warm_by = Instant::now() + Duration::from_secs(300);
    while inbox.lock().unwrap().by_recipient.len() < warm.len() {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the service exited during the warm-up: {status}");
        }
        if Instant::now() > warm_by {
            anyhow::bail!("the warm-up's mails did not all arrive within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first warm-up user's link: the timing mode's known user confirms it.
    let first_warm_link = inbox
        .lock()
        .unwrap()
        .by_recipient
        .get(&format!("u{}.{run}@bench.example", args.requests))
        .map(|(token, _)| token.clone());
    inbox.lock().unwrap().by_recipient.clear();

    if let Some(n) = args.timing {
        // A known user with nothing pending: signed up, then confirmed.
        let known = format!("bench-{run}-{}", args.requests);
        let token =
            first_warm_link.ok_or_else(|| anyhow::anyhow!("--timing needs --warmup 1 or more"))?;
        client
            .clone()
            .confirm_link(pb::ConfirmLinkRequest { token })
            .await?;
        timing::run(n, client, known, &run).await?;
        child.kill().await.ok();
        return Ok(());
    }
    if let Some(watchers) = args.idle_watchers {
        let idle = idle::Idle {
            watchers,
            requests: args.requests,
            concurrency: args.concurrency,
            run,
            pid,
            grpc_port,
        };
        idle::run(idle, client).await?;
        child.kill().await.ok();
        return Ok(());
    }
    if let Some(rate) = args.rate {
        let soak = soak::Soak {
            rate,
            duration: args.duration,
            confirm_every: args.confirm_every.max(1),
            run,
            pid,
        };
        soak::run(soak, client, inbox).await?;
        child.kill().await.ok();
        return Ok(());
    }

    let watcher = if args.watch {
        Some(watch::start(grpc_port).await?)
    } else {
        None
    };

    // The database's name: the URL's last path segment, without its query.
    let database = args.database_url.rsplit('/').next().unwrap_or_default();
    let database = database.split('?').next().unwrap_or_default().to_owned();
    let mut pg = args
        .pg_postmaster
        .map(|pm| pgcpu::Meter::start(pm, &database));

    // Phase 1: sign-ups.
    let started = Instant::now();
    let answered: Vec<(String, Duration, Instant)> = futures::stream::iter(0..args.requests)
        .map(sign_up)
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let signup_wall = started.elapsed();

    // Wait for every mail.
    let deadline = Instant::now() + Duration::from_secs(300);
    while inbox.lock().unwrap().by_recipient.len() < args.requests && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mail_wall = started.elapsed();
    pg.iter_mut().for_each(pgcpu::Meter::mark);
    let inbox_now: HashMap<String, (String, Instant)> =
        std::mem::take(&mut inbox.lock().unwrap().by_recipient);
    // While the burst runs: sign-ups answered and mails arrived in its last three
    // quarters (the first quarter is the outbox's start-up), and what was still queued
    // when the last sign-up was answered. A worker that keeps up delivers at least as
    // many mails a second as sign-ups are answered, and leaves only its sends in flight.
    let burst_end = started + signup_wall;
    let window_from = started + signup_wall / 4;
    let in_window = |t: &Instant| *t >= window_from && *t <= burst_end;
    let window_s = (burst_end - window_from).as_secs_f64();
    let signed_in_window = answered.iter().filter(|(_, _, t)| in_window(t)).count();
    let mailed_in_window = inbox_now.values().filter(|(_, t)| in_window(t)).count();
    let queued_at_end =
        answered.len() - inbox_now.values().filter(|(_, t)| *t <= burst_end).count();
    let mut commit_to_smtp: Vec<Duration> = answered
        .iter()
        .filter_map(|(email, _, done)| {
            inbox_now
                .get(email)
                .map(|(_, at)| at.saturating_duration_since(*done))
        })
        .collect();

    // Phase 2: confirm every link over gRPC.
    let tokens: Vec<String> = inbox_now.values().map(|(t, _)| t.clone()).collect();
    let started = Instant::now();
    let confirmed: Vec<Duration> = futures::stream::iter(tokens)
        .map(|token| {
            let mut c = client.clone();
            async move {
                let t = Instant::now();
                c.confirm_link(pb::ConfirmLinkRequest { token })
                    .await
                    .expect("confirmed");
                t.elapsed()
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let confirm_wall = started.elapsed();
    pg.iter_mut().for_each(pgcpu::Meter::mark);

    let peak_rss_kb = rss_kb(pid, "VmHWM:");
    let service_cpu = cpu_seconds(&pid.to_string());
    child.kill().await.ok();

    let mut signup: Vec<Duration> = answered.iter().map(|(_, d, _)| *d).collect();
    let mut confirm = confirmed;
    println!("| workload | c | requests | req/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| RequestVerification | {} | {} | {:.0} | {:.2} | {:.2} |",
        args.concurrency,
        signup.len(),
        signup.len() as f64 / signup_wall.as_secs_f64(),
        pct(&mut signup, 0.50),
        pct(&mut signup, 0.99)
    );
    println!(
        "| ConfirmLink | {} | {} | {:.0} | {:.2} | {:.2} |",
        args.concurrency,
        confirm.len(),
        confirm.len() as f64 / confirm_wall.as_secs_f64(),
        pct(&mut confirm, 0.50),
        pct(&mut confirm, 0.99)
    );
    println!();
    println!(
        "mails delivered: {} in {:.2}s ({:.0} mails/s); commit-to-SMTP p50 {:.1} ms, p99 {:.1} ms; service peak RSS {:.1} MB",
        inbox_now.len(),
        mail_wall.as_secs_f64(),
        inbox_now.len() as f64 / mail_wall.as_secs_f64(),
        pct(&mut commit_to_smtp, 0.50),
        pct(&mut commit_to_smtp, 0.99),
        peak_rss_kb as f64 / 1024.0
    );
    let signups_per_s = signup.len() as f64 / signup_wall.as_secs_f64();
    println!(
        "mails/s ÷ sign-ups/s: {:.2}; CPU seconds since start: this bench (client and SMTP sink) {:.1}, the service {:.1}",
        inbox_now.len() as f64 / mail_wall.as_secs_f64() / signups_per_s,
        cpu_seconds("self"),
        service_cpu,
    );
    if let Some(meter) = &pg {
        println!("{}", meter.report(confirm.len()));
    }
    if let Some(seen) = &watcher {
        // The user of each answered sign-up: `u{i}.{run}@…` was user `bench-{run}-{i}`.
        let users: Vec<(String, Instant)> = answered
            .iter()
            .filter_map(|(email, _, done)| {
                let i = email.strip_prefix('u')?.split('.').next()?;
                Some((format!("bench-{run}-{i}"), *done))
            })
            .collect();
        println!("{}", watch::report(&seen.lock().unwrap(), &users));
    }
    println!(
        "during the burst (last 3/4): {:.0} sign-ups/s, {:.0} mails/s, mails ÷ sign-ups {:.2}; mails still queued when the last sign-up was answered: {}",
        signed_in_window as f64 / window_s,
        mailed_in_window as f64 / window_s,
        mailed_in_window as f64 / signed_in_window.max(1) as f64,
        queued_at_end,
    );
    Ok(())
}

fn pct(samples: &mut [Duration], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
