//! What runs against the service while the primary dies and the standby takes over: a
//! load of sign-ups, a confirmer of every mail that arrives, and a watcher of the change
//! feed that resumes after the last cursor it read; and what each of them saw.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emailverify::grpc::pb;
use tonic::Code;

use crate::helpers::{TestApp, sign_up};

/// Sign-ups under way at once.
const CONCURRENCY: usize = 16;
/// The most sign-ups one run sends (the load stops earlier, on time).
const MOST: usize = 20_000;

/// What the load saw.
#[derive(Default)]
pub struct Seen {
    /// Sign-up `i` answered OK with this flow.
    pub signed_up: HashMap<usize, String>,
    /// Addresses whose confirmation answered OK.
    pub confirmed: HashSet<String>,
    pub unavailable: usize,
    /// Any answer other than OK and UNAVAILABLE.
    pub wrong: Vec<String>,
    /// Mails by Message-ID: recipient, deliveries.
    pub mails: HashMap<String, (String, u32)>,
    /// The feed as a watcher read it across the switch: (cursor, user, type).
    pub feed: Vec<(String, String, String)>,
}

fn answer(seen: &Mutex<Seen>, what: &str, s: tonic::Status) {
    let mut seen = seen.lock().unwrap();
    if s.code() == Code::Unavailable {
        seen.unavailable += 1;
    } else {
        seen.wrong
            .push(format!("{what}: {:?} {}", s.code(), s.message()));
    }
}

/// Sign-ups, `CONCURRENCY` at a time, until `stop` (bounded by `MOST` and two minutes).
pub fn load(
    app: &TestApp,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    (0..CONCURRENCY)
        .map(|_| {
            let (grpc, seen, stop, next) =
                (app.grpc.clone(), seen.clone(), stop.clone(), next.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120)
                {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= MOST {
                        break;
                    }
                    match grpc.clone().request_verification(sign_up(i)).await {
                        Ok(r) => {
                            let flow = r.into_inner().flow.map(|f| f.flow_id).unwrap_or_default();
                            seen.lock().unwrap().signed_up.insert(i, flow);
                        }
                        Err(s) => answer(&seen, &format!("sign-up {i}"), s),
                    }
                }
            })
        })
        .collect()
}

/// Takes the mails as they come and confirms the first of each recipient, until `stop`
/// and a quiet second (bounded by three minutes).
pub fn confirmer(
    app: &TestApp,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (smtp, grpc, base) = (app.smtp.clone(), app.grpc.clone(), app.http_base.clone());
    let started = Instant::now();
    tokio::spawn(async move {
        while started.elapsed() < Duration::from_secs(180) {
            let Some(mail) = smtp.next_within(Duration::from_secs(1)).await else {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            };
            let to = mail.to.join(",");
            let first = {
                let mut seen = seen.lock().unwrap();
                let entry = seen
                    .mails
                    .entry(mail.message_id.clone())
                    .or_insert((to.clone(), 0));
                entry.1 += 1;
                entry.1 == 1
            };
            if !first || stop.load(Ordering::Relaxed) {
                continue;
            }
            let token = mail.token(&base);
            match grpc
                .clone()
                .confirm_link(pb::ConfirmLinkRequest { token })
                .await
            {
                Ok(_) => {
                    seen.lock().unwrap().confirmed.insert(to);
                }
                Err(s) => answer(&seen, &format!("confirm {to}"), s),
            }
        }
    })
}

/// Watches the feed from the beginning, resuming after the last cursor it read whenever
/// the stream breaks, until `stop` (bounded by three minutes).
pub fn watcher(
    app: &TestApp,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let grpc = app.grpc.clone();
    let started = Instant::now();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(180) {
            let after = seen
                .lock()
                .unwrap()
                .feed
                .last()
                .map(|e| e.0.clone())
                .unwrap_or_default();
            let req = pb::WatchEventsRequest {
                from_beginning: after.is_empty(),
                after,
                types: vec![],
            };
            if let Ok(stream) = grpc.clone().watch_events(req).await {
                let mut stream = stream.into_inner();
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                        Ok(Ok(Some(e))) => {
                            let kind = e.event.map(|e| e.r#type).unwrap_or_default();
                            seen.lock().unwrap().feed.push((e.cursor, e.user_id, kind));
                        }
                        Ok(_) => break,
                        Err(_) => continue,
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}
