//! Idle-watchers mode (`--idle-watchers N`): what WatchEvents watchers that never read
//! cost everyone else. In one run against one service process: sign-ups with no watcher,
//! then with N watchers open that read nothing; for each, RequestVerification's p50/p99
//! and the service's CPU-seconds per request (`/proc/<pid>/stat`), and the service's CPU
//! while nothing is asked (what the watchers alone cost it); then the same again with the
//! same N watchers, whose windows are full by then. Each watcher polling the
//! database on its own made 2,000 of them take the service to 97 % of a core; with one
//! shared poller they cost what one does.

use std::time::{Duration, Instant};

use emailverify::grpc::pb::{self, EmailVerificationClient};
use futures::StreamExt;
use tonic::transport::Channel;

use super::pct;
use super::procfs::cpu_seconds;

pub struct Idle {
    pub watchers: usize,
    pub requests: usize,
    pub concurrency: usize,
    pub run: String,
    pub pid: u32,
    pub grpc_port: u16,
}

/// Sign-ups `range` at `concurrency`: their latencies, and the service's CPU-seconds.
async fn sign_ups(
    client: &EmailVerificationClient<Channel>,
    idle: &Idle,
    range: std::ops::Range<usize>,
) -> (Vec<Duration>, f64, Duration) {
    let cpu = cpu_seconds(&idle.pid.to_string());
    let started = Instant::now();
    let run = idle.run.clone();
    let latencies: Vec<Duration> = futures::stream::iter(range)
        .map(|i| {
            let mut c = client.clone();
            let run = run.clone();
            async move {
                let t = Instant::now();
                c.request_verification(pb::RequestVerificationRequest {
                    user_id: format!("idle-{run}-{i}"),
                    email: format!("i{i}.{run}@bench.example"),
                    locale: String::new(),
                })
                .await
                .expect("sign-up accepted");
                t.elapsed()
            }
        })
        .buffer_unordered(idle.concurrency)
        .collect()
        .await;
    (
        latencies,
        cpu_seconds(&idle.pid.to_string()) - cpu,
        started.elapsed(),
    )
}

/// The service's CPU-seconds per second over `window` with nothing asked of it.
async fn quiet_cpu(idle: &Idle, window: Duration) -> f64 {
    let cpu = cpu_seconds(&idle.pid.to_string());
    tokio::time::sleep(window).await;
    (cpu_seconds(&idle.pid.to_string()) - cpu) / window.as_secs_f64()
}

pub async fn run(idle: Idle, client: EmailVerificationClient<Channel>) -> anyhow::Result<()> {
    const QUIET: Duration = Duration::from_secs(5);
    println!(
        "| idle watchers | sign-ups | c | req/s | p50 ms | p99 ms | service CPU-ms per sign-up | service CPU while nothing is asked |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut held = Vec::new();
    // No watcher; N opened just before (each is sent every event until its flow-control
    // window and buffer are full); the same N again (full by now: they cost nothing more).
    for (phase, watchers) in [0, idle.watchers, idle.watchers].into_iter().enumerate() {
        if watchers > 0 && held.is_empty() {
            let opened = Instant::now();
            held = super::watch::idle_watchers(idle.grpc_port, watchers).await?;
            eprintln!(
                "{} watchers open in {:.1}s",
                held.len(),
                opened.elapsed().as_secs_f64()
            );
        }
        // Let the start settle (mails of the previous phase, the watchers' first reads).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let quiet = quiet_cpu(&idle, QUIET).await;
        let from = phase * idle.requests;
        let (mut lat, cpu, wall) = sign_ups(&client, &idle, from..from + idle.requests).await;
        println!(
            "| {watchers} | {} | {} | {:.0} | {:.2} | {:.2} | {:.3} | {:.1} % of a core |",
            lat.len(),
            idle.concurrency,
            lat.len() as f64 / wall.as_secs_f64(),
            pct(&mut lat, 0.50),
            pct(&mut lat, 0.99),
            cpu * 1000.0 / lat.len() as f64,
            quiet * 100.0,
        );
    }
    drop(held);
    Ok(())
}
