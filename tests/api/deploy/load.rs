//! The deploy test's load generator: sign-ups through every host, 8 at a time, each sent to
//! the next host in turn; an UNAVAILABLE answer (a host draining, or down between stop and
//! start), or a call cut off with its connection, is retried, the same request, on the
//! next host — as a caller behind a load balancer would. Bounded: at most 2 minutes and 100,000 sign-ups, 100 tries each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use emailverify::grpc::pb::email_verification_client::EmailVerificationClient;
use tonic::transport::{Channel, Endpoint};

const WORKERS: usize = 8;
const MOST: usize = 100_000;
const TRIES: usize = 100;
const LONGEST: Duration = Duration::from_secs(120);

pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Report>>,
}

#[derive(Default)]
pub struct Report {
    /// Sign-ups answered OK (each a distinct user and address).
    pub ok: usize,
    /// Of those, how many saw UNAVAILABLE before their OK.
    pub saw_unavailable: usize,
    /// Of those, how many had a call cut off with its connection before any answer (the
    /// host closed it, or refused the stream with GOAWAY, as it stopped). tonic names this
    /// CANCELLED, UNKNOWN or INTERNAL with a transport error as the cause; gRPC's other
    /// clients name it UNAVAILABLE (or retry it themselves). Safe to retry: a repeated
    /// sign-up returns the same flow and sends no second mail.
    pub cut_off: usize,
    /// Any other answer, or a sign-up that never got its OK.
    pub failures: Vec<String>,
}

impl Load {
    /// Starts sending to the hosts at `addrs` (their gRPC port is 50051).
    pub fn start(addrs: Vec<String>) -> Self {
        let clients: Vec<_> = addrs
            .iter()
            .map(|a| {
                let channel = Endpoint::from_shared(format!("http://{a}:50051"))
                    .unwrap()
                    .connect_timeout(Duration::from_secs(1))
                    .timeout(Duration::from_secs(20))
                    .connect_lazy();
                EmailVerificationClient::new(channel)
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers = (0..WORKERS)
            .map(|_| {
                let (clients, stop, next) = (clients.clone(), stop.clone(), next.clone());
                tokio::spawn(async move {
                    let mut report = Report::default();
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < LONGEST {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= MOST {
                            break;
                        }
                        sign_up(&clients, i, &mut report).await;
                    }
                    report
                })
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops sending (the sign-ups under way finish) and sums up.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Report::default();
        for w in self.workers {
            let r = w.await.unwrap();
            total.ok += r.ok;
            total.saw_unavailable += r.saw_unavailable;
            total.cut_off += r.cut_off;
            total.failures.extend(r.failures);
        }
        total
    }
}

async fn sign_up(clients: &[EmailVerificationClient<Channel>], i: usize, report: &mut Report) {
    let (mut unavailable, mut cut_off) = (false, false);
    for attempt in 0..TRIES {
        let mut client = clients[(i + attempt) % clients.len()].clone();
        match client
            .request_verification(crate::helpers::sign_up(i))
            .await
        {
            Ok(_) => {
                report.ok += 1;
                report.saw_unavailable += usize::from(unavailable);
                report.cut_off += usize::from(cut_off);
                return;
            }
            Err(s) if s.code() == tonic::Code::Unavailable => {
                unavailable = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) if unanswered(&s) => {
                cut_off = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => {
                report.failures.push(format!("sign-up {i}: {s:?}"));
                return;
            }
        }
    }
    report
        .failures
        .push(format!("sign-up {i}: UNAVAILABLE {TRIES} times"));
}

/// Whether a call failed in the client's transport, with no answer from the service: its
/// connection was closed or reset under it, or the stream was refused by the stopping
/// host's GOAWAY (HTTP/2 says such a stream was not processed). tonic makes up a status
/// for these (CANCELLED, UNKNOWN or INTERNAL) with the transport error as its source; a
/// status the service sent has none.
fn unanswered(s: &tonic::Status) -> bool {
    use std::error::Error;
    s.source()
        .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
}
