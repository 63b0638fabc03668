//! The outbox worker: delivers the mails the core queued, at least once, in order of due
//! time. It wakes at once when the core commits a mail (a `Notify`), otherwise polls so
//! that mails queued by other processes and retries that fall due are picked up.
//!
//! A mail is *claimed* with a lease before sending, so several workers (or processes) on one
//! database never send the same row at once, and a crashed worker's claim returns when its
//! lease ends. Transient failures retry with exponential backoff and jitter; a 5xx reply or
//! too many attempts make the mail dead. Sent or dead, its sealed link is erased.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::message::Composer;
use super::transport::{SENDS_IN_FLIGHT, Transport};
use crate::clock::{Clock, duration_ms};
use crate::domain::email::mask;
use crate::store::Store;
use crate::store::entity::outbox;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubles each attempt.
    pub base: Duration,
    /// Upper bound of one delay.
    pub max: Duration,
    /// After this many failed attempts the mail is dead.
    pub max_attempts: i32,
    /// How long a claim holds before another worker may take the mail.
    pub lease: Duration,
    /// How often to look for work nobody told us about.
    pub poll: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            max: Duration::from_secs(15 * 60),
            max_attempts: 12,
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with "equal jitter": half fixed, half random, capped.
    pub fn delay(&self, attempts_so_far: i32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempts_so_far.clamp(0, 20) as u32);
        let capped = exp.min(self.max);
        let half = capped / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

pub struct Worker {
    /// Names this worker's claims in the outbox.
    pub id: String,
    pub store: Store,
    /// Turns a queued row into the message to send.
    pub composer: Composer,
    pub transport: Transport,
    pub clock: Arc<dyn Clock>,
    pub wake: Arc<Notify>,
    pub retry: RetryPolicy,
    /// How long an address refused with a 5.1.x status stays suppressed.
    pub suppression_ttl: Duration,
}

/// Mails claimed per round. Small, so a slow server never holds many mails hostage.
pub const MAILS_PER_ROUND: u64 = 32;
/// Rounds under way at once (see `Worker::rounds`). Also on SQLite, where the database
/// work of rounds cannot overlap: one round there loses the single connection to the
/// requests (mails ÷ sign-ups 0.25 at c=64, BENCHMARKS.md), three keep up better (0.75).
pub const ROUNDS_IN_FLIGHT: usize = 3;
/// The most mails a crash can send twice: those handed to the relay and not yet marked
/// sent. A round's sent mails are marked at its end, in one statement (a statement per
/// mail cost the database more than the sign-ups it follows, BENCHMARKS.md), so: every
/// round under way, whole. A round renews its claims while it runs (`holding`), so
/// otherwise only a database outage longer than the lease (a failover) can let them go
/// under it, and again at most these. Their Message-ID tells a duplicate.
pub const UNMARKED_AT_MOST: usize = ROUNDS_IN_FLIGHT * MAILS_PER_ROUND as usize;
/// Longest pause between probes while the SMTP server is unreachable.
const MAX_OUTAGE_PAUSE: Duration = Duration::from_secs(30);

/// What one delivery attempt came to.
enum Delivery {
    /// The relay took it: to be marked sent with the rest of the round.
    Sent(Box<outbox::Model>, String),
    /// Failed or deferred, and recorded.
    Done,
    /// The SMTP server did not answer at all: pause the whole worker, not just this mail.
    Unreachable,
}

impl Worker {
    /// Runs until `stop` is cancelled; a send in flight is finished first.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(transport = %self.transport.describe(), "mail worker started");
        futures::future::join_all((0..ROUNDS_IN_FLIGHT).map(|_| self.rounds(&stop))).await;
        tracing::info!("mail worker stopped");
    }

    /// One loop of rounds: claim, send, mark (the loops share the transport's
    /// connections). Several loops overlap one round's database work with the others'
    /// sends, which under load is what bounds a single loop.
    async fn rounds(&self, stop: &CancellationToken) {
        let me = self.id.clone();
        let mut outage_pause: Option<Duration> = None;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let now = self.clock.now_ms();
            let claimed = match self
                .store
                .claim_due_mail(&me, now, self.retry.lease, MAILS_PER_ROUND)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "mail worker cannot reach the database");
                    Vec::new()
                }
            };
            let full = claimed.len() as u64 == MAILS_PER_ROUND;
            let ids: Vec<String> = claimed.iter().map(|m| m.mail_id.clone()).collect();
            // Several sends at once: each SMTP exchange spends most of its time waiting
            // on the network (the transport keeps a connection per send in flight).
            let unreachable = std::sync::atomic::AtomicBool::new(false);
            let unsent = std::sync::Mutex::new(Vec::new());
            let sent = std::sync::Mutex::new(Vec::new());
            let sends =
                futures::stream::iter(claimed).for_each_concurrent(SENDS_IN_FLIGHT, |mail| {
                    let (me, unreachable, unsent, sent, stop, this) =
                        (&me, &unreachable, &unsent, &sent, stop, self);
                    async move {
                        if stop.is_cancelled()
                            || unreachable.load(std::sync::atomic::Ordering::Relaxed)
                        {
                            // Stopping, or the server is down: hand it back below.
                            if let Ok(mut u) = unsent.lock() {
                                u.push(mail.mail_id);
                            }
                            return;
                        }
                        // Before sending, the claim must still be ours with time to spare:
                        // a mail whose lease ran out may belong to another worker. A claim
                        // made moments ago in this round needs no renewal (one write less).
                        let now = this.clock.now_ms();
                        let lease = duration_ms(this.retry.lease);
                        if mail.claimed_until.unwrap_or(0) - now < lease / 2 {
                            match this
                                .store
                                .renew_claim(&mail.mail_id, me, now, this.retry.lease)
                                .await
                            {
                                Ok(true) => {}
                                Ok(false) => return,
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot renew a mail claim");
                                    return;
                                }
                            }
                        }
                        match this.deliver(mail, outage_pause).await {
                            Delivery::Sent(mail, masked) => {
                                if let Ok(mut s) = sent.lock() {
                                    s.push((*mail, masked));
                                }
                            }
                            Delivery::Unreachable => {
                                unreachable.store(true, std::sync::atomic::Ordering::Relaxed)
                            }
                            Delivery::Done => {}
                        }
                    }
                });
            self.holding(&me, &ids, sends).await;
            let unreachable = unreachable.into_inner();
            // The round's sent mails are marked together: one statement instead of one
            // per mail. A crash before this sends them again (see `UNMARKED_AT_MOST`).
            let sent = sent.into_inner().unwrap_or_default();
            if !sent.is_empty()
                && let Err(e) = self.store.mails_sent(&sent, self.clock.now_ms()).await
            {
                // Their claims' leases will run out and they will be sent again.
                tracing::warn!(error = %e, mails = sent.len(), "could not mark mails sent");
            }
            // Hand back what we claimed but did not send, so nobody waits for our lease.
            let unsent = unsent.into_inner().unwrap_or_default();
            if !unsent.is_empty()
                && let Err(e) = self.store.release_claims(&unsent).await
            {
                tracing::warn!(error = %e, "could not release mail claims; their lease will expire");
            }
            if unreachable {
                let pause = outage_pause
                    .map(|p| (p * 2).min(MAX_OUTAGE_PAUSE))
                    .unwrap_or(self.retry.base.min(MAX_OUTAGE_PAUSE));
                if outage_pause.is_none() {
                    tracing::warn!(
                        "SMTP server unreachable: holding mail until it answers (no attempts are lost)"
                    );
                }
                outage_pause = Some(pause);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            } else if outage_pause.take().is_some() {
                tracing::info!("SMTP server reachable again");
            }
            if full {
                continue;
            }
            let wait = match self.store.next_mail_due().await {
                Ok(Some(due)) => Duration::from_millis((due - self.clock.now_ms()).max(0) as u64)
                    .min(self.retry.poll),
                _ => self.retry.poll,
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Runs a round's sends while renewing its claims every third of the lease: a round
    /// slower than the lease (a slow relay) would otherwise let the worker's other rounds,
    /// or another process, claim and send again a mail it has sent and not yet marked. So
    /// only a database outage lets a claim run out under a round (`UNMARKED_AT_MOST`).
    async fn holding(&self, me: &str, ids: &[String], sends: impl Future<Output = ()>) {
        let keep = async {
            loop {
                tokio::time::sleep(self.retry.lease / 3).await;
                let now = self.clock.now_ms();
                if let Err(e) = self
                    .store
                    .renew_claims(ids, me, now, self.retry.lease)
                    .await
                {
                    tracing::warn!(error = %e, "cannot renew the round's mail claims");
                }
            }
        };
        tokio::select! {
            () = sends => {}
            _ = keep => {}
        }
    }

    async fn deliver(&self, mail: outbox::Model, outage_pause: Option<Duration>) -> Delivery {
        let masked = mask(&mail.recipient);
        let result = match self.composer.compose(&mail) {
            Ok(message) => self.transport.send(message).await,
            // A mail we cannot build (unreadable parameters, unsealable link) will never build.
            Err(reason) => Err(super::transport::SendError {
                permanent: true,
                unreachable: false,
                message: reason,
            }),
        };
        let now = self.clock.now_ms();
        let (outcome, delivery) = match result {
            Ok(()) => {
                tracing::info!(mail_id = %mail.mail_id, template = mail.template.as_str(), to = %masked, "mail sent");
                crate::metrics::mail("sent", mail.template.as_str());
                return Delivery::Sent(Box::new(mail), masked);
            }
            Err(e) if e.unreachable => {
                crate::metrics::mail("deferred", mail.template.as_str());
                let pause = outage_pause
                    .unwrap_or(self.retry.base)
                    .min(MAX_OUTAGE_PAUSE);
                let retry_at = now + duration_ms(pause);
                (
                    self.store
                        .mail_deferred(&mail.mail_id, retry_at, &e.message)
                        .await,
                    Delivery::Unreachable,
                )
            }
            Err(e) => {
                let attempts = mail.attempts + 1;
                let retry_at = (!e.permanent && attempts < self.retry.max_attempts)
                    .then(|| now + duration_ms(self.retry.delay(mail.attempts)));
                let reason = e.message;
                crate::metrics::mail(
                    if retry_at.is_some() {
                        "retried"
                    } else {
                        "dead"
                    },
                    mail.template.as_str(),
                );
                if retry_at.is_some() {
                    tracing::warn!(mail_id = %mail.mail_id, to = %masked, attempts, %reason, "mail delivery failed; will retry");
                } else {
                    tracing::error!(mail_id = %mail.mail_id, to = %masked, attempts, %reason, "mail is dead");
                }
                let recorded = self
                    .store
                    .mail_failed(&mail, now, retry_at, &reason, &masked)
                    .await;
                // No such mailbox (5.1.x): the inbox is suppressed, so no request mails it
                // again for a while. Other refusals (5.7.x policy) only fail this mail.
                // (The enhanced status is read from the reply's text.)
                let status = crate::domain::status::enhanced_status(&reason);
                if let Some(status) =
                    status.filter(|s| e.permanent && crate::domain::status::suppresses(s))
                {
                    let key = crate::domain::mailbox::MailboxKey::of(&mail.recipient);
                    let until = now + duration_ms(self.suppression_ttl);
                    let cause = crate::store::SuppressionCause::Bounced;
                    match self
                        .store
                        .suppress(&key, cause, Some(until), status, now)
                        .await
                    {
                        Ok(()) => {
                            tracing::warn!(mail_id = %mail.mail_id, to = %masked, %status, "address suppressed")
                        }
                        Err(err) => {
                            tracing::warn!(mail_id = %mail.mail_id, error = %err, "could not suppress an address")
                        }
                    }
                }
                (recorded, Delivery::Done)
            }
        };
        if let Err(e) = outcome {
            // The claim's lease will run out and the mail will be tried again.
            tracing::warn!(mail_id = %mail.mail_id, error = %e, "could not record a delivery outcome");
        }
        delivery
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_its_bounds() {
        let p = RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            ..RetryPolicy::default()
        };
        for attempt in 0..30 {
            let full = Duration::from_secs(1)
                .saturating_mul(1 << attempt.min(20))
                .min(Duration::from_secs(60));
            let d = p.delay(attempt);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
    }
}
