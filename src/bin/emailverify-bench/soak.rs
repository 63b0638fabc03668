//! Soak mode (`--rate R --duration D`): sign-ups at a steady R per second (open loop: the
//! next one starts on time whether or not earlier ones have answered), every `confirm_every`-th
//! mail's link confirmed as it arrives, and the service's RSS sampled every second. Reports
//! the time from each RPC's answer to its mail's arrival at the sink, and the RSS of the
//! first and last thirds of the run: memory that grows with the work shows as their ratio.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emailverify::grpc::pb::{self, EmailVerificationClient};
use tonic::transport::Channel;

use super::sink::Inbox;
use super::{pct, rss_kb};

pub struct Soak {
    pub rate: f64,
    pub duration: Duration,
    pub confirm_every: usize,
    pub run: String,
    pub pid: u32,
}

#[derive(Default)]
struct Counts {
    signed_up: AtomicU64,
    refused: AtomicU64,
    confirmed: AtomicU64,
    confirm_failed: AtomicU64,
}

pub async fn run(
    soak: Soak,
    client: EmailVerificationClient<Channel>,
    inbox: Arc<Mutex<Inbox>>,
) -> anyhow::Result<()> {
    let counts = Arc::new(Counts::default());
    let answered: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut early: HashMap<String, Instant> = HashMap::new();
    let mut rss: Vec<u64> = Vec::new();
    let mut mails = 0usize;

    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / soak.rate));
    let mut sample = tokio::time::interval(Duration::from_secs(1));
    let mut collect = tokio::time::interval(Duration::from_millis(20));
    let mut i = 0usize;
    let drain_until = started + soak.duration + Duration::from_secs(30);
    loop {
        let sending = started.elapsed() < soak.duration;
        tokio::select! {
            _ = ticks.tick(), if sending => {
                let (mut c, answered, counts) = (client.clone(), answered.clone(), counts.clone());
                let email = format!("s{i}.{}@soak.example", soak.run);
                let user_id = format!("soak-{}-{i}", soak.run);
                i += 1;
                tokio::spawn(async move {
                    let r = c.request_verification(pb::RequestVerificationRequest {
                        user_id, email: email.clone(), locale: String::new(),
                    }).await;
                    match r {
                        Ok(_) => {
                            answered.lock().unwrap().insert(email, Instant::now());
                            counts.signed_up.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => { counts.refused.fetch_add(1, Ordering::Relaxed); }
                    }
                });
            }
            _ = sample.tick() => {
                if started.elapsed() <= soak.duration {
                    rss.push(rss_kb(soak.pid, "VmRSS:"));
                }
            }
            _ = collect.tick() => {
                let arrived: Vec<(String, (String, Instant))> =
                    inbox.lock().unwrap().by_recipient.drain().collect();
                for (email, (token, at)) in arrived {
                    mails += 1;
                    early.insert(email.clone(), at);
                    if mails.is_multiple_of(soak.confirm_every) {
                        let (mut c, counts) = (client.clone(), counts.clone());
                        tokio::spawn(async move {
                            let r = c.confirm_link(pb::ConfirmLinkRequest { token }).await;
                            let n = if r.is_ok() { &counts.confirmed } else { &counts.confirm_failed };
                            n.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                }
                // A mail may arrive before its RPC's answer is recorded: match both ways.
                let mut answered = answered.lock().unwrap();
                early.retain(|email, at| match answered.remove(email) {
                    Some(answer) => {
                        latencies.push(at.saturating_duration_since(answer));
                        false
                    }
                    None => true,
                });
                let done = !sending && answered.is_empty() && early.is_empty();
                if done || Instant::now() > drain_until {
                    break;
                }
            }
        }
    }
    let third = rss.len() / 3;
    let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len().max(1) as f64 / 1024.0;
    let (first, last) = (mean(&rss[..third]), mean(&rss[rss.len() - third..]));
    let sent = counts.signed_up.load(Ordering::Relaxed);
    println!(
        "soak: {:.0} sign-ups/s for {:.0} s: {sent} answered OK, {} refused; {mails} mails delivered; \
         {} confirmations OK, {} failed",
        soak.rate,
        soak.duration.as_secs_f64(),
        counts.refused.load(Ordering::Relaxed),
        counts.confirmed.load(Ordering::Relaxed),
        counts.confirm_failed.load(Ordering::Relaxed),
    );
    println!(
        "answer-to-inbox: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} mails matched)",
        pct(&mut latencies, 0.50),
        pct(&mut latencies, 0.99),
        pct(&mut latencies, 1.0),
        latencies.len()
    );
    println!(
        "service RSS: first third {first:.1} MB, last third {last:.1} MB (last/first {:.3}), max {:.1} MB",
        last / first.max(f64::MIN_POSITIVE),
        rss.iter().max().copied().unwrap_or(0) as f64 / 1024.0
    );
    let per_minute: Vec<String> = rss
        .iter()
        .step_by(60)
        .map(|kb| format!("{:.1}", *kb as f64 / 1024.0))
        .collect();
    println!("RSS each minute (MB): {}", per_minute.join(" "));
    Ok(())
}
