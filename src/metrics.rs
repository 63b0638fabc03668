//! Prometheus metrics, served at `GET /metrics` on the admin port (`EMAILVERIFY_ADMIN_ADDR`,
//! never the public HTTP port). Names and what they count:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `emailverify_rpc_requests_total` | method, code | gRPC calls by outcome |
//! | `emailverify_rpc_duration_seconds` | method | gRPC latency histogram |
//! | `emailverify_flows_requested_total` | kind | new flows (`verify`, `change`) |
//! | `emailverify_confirmations_total` | outcome, via | successful confirmations (`link`, `code`) |
//! | `emailverify_refusals_total` | reason | refused requests by contract reason |
//! | `emailverify_rate_limited_total` | limit | refusals by `user`, `recipient`, `ip`, `code` limits |
//! | `emailverify_optimistic_tries_total` | use_case, result | optimistic tries (`store::optimistic`): `ended`, `ran_again` or `needs_lock` |
//! | `emailverify_link_page_views_total` | result | `GET /verify`: `live` (a confirm page shown) or the refusal |
//! | `emailverify_mail_sent_total` / `_retried_total` / `_dead_total` / `_deferred_total` | template | deliveries, failed attempts to retry, dead mails, sends held during an SMTP outage |
//! | `emailverify_outbox_depth`, `emailverify_outbox_dead`, `emailverify_outbox_oldest_age_seconds` | | read from the database at each scrape |
//! | `emailverify_retention_pruned_total` | table | rows retention removed (`outbox`, `tokens`, `events`, `flows`, drained `rate_limits`) |
//! | `emailverify_ready` | | 1 while the database answers (the health status), else 0 |
//! | `emailverify_auth_failures_total` | reason | gRPC calls refused for a `missing` or `wrong` bearer token |
//! | `emailverify_cross_site_posts_total` | | link-page POSTs a browser marked cross-site (403, counted against nobody) |
//! | `emailverify_connections_open`, `emailverify_connections_max` | port | connections open now on `grpc`, `http`, `admin`, and the cap of each |
//! | `emailverify_connections_timed_out_total` | port, reason | connections closed for not sending their `headers` (gRPC: first frame) in time, or `idle` |
//! | `emailverify_inbound_reports_total` | outcome | inbound messages by what they came to (`bounced`, `delayed`, `complained`, `repeat`, `ignored`, `unmatched`, `unparseable`) |
//! | `emailverify_inbound_sessions_refused_total` | reason | inbound SMTP connections answered 421: `per_peer`, `busy` |
//! | `emailverify_inbound_sessions_closed_total` | reason | inbound SMTP sessions cut off: `silent`, `lifetime`, `bare_lf`, `too_long`, … |
//! | `emailverify_inbound_throttled_total` | | 450 4.7.1 answers to a peer past 100 unmatched reports a minute |
//! | `emailverify_accept_errors_total` | port, kind | failed accepts: `fd_exhausted` (EMFILE/ENFILE: the file-descriptor table is full), `other` |
//! | `emailverify_connections_refused_total` | port, reason | connections closed at once: `per_peer` (gRPC: the peer address has `EMAILVERIFY_MAX_CONNECTIONS_PER_PEER` open; HTTP: `EMAILVERIFY_HTTP_MAX_PENDING_PER_PEER` not yet answered) |
//! | `emailverify_connections_evicted_total` | port | idle kept-alive HTTP connections closed early because the port neared its cap |
//! | `emailverify_feed_reads_total` | kind | reads of the events table for the change feed: `poll` (the one shared poller), `catch_up` (a watcher behind it), `start` (where a watcher starts), `publish` (the NATS publisher) |
//! | `emailverify_watchers` | | WatchEvents watchers open now (at most `EMAILVERIFY_MAX_WATCHERS`) |
//! | `emailverify_watchers_refused_total` | | WatchEvents calls refused with `TOO_MANY_WATCHERS` |
//! | `emailverify_watchers_closed_total` | reason | watchers the server closed: `idle` (read nothing while events waited) |
//! | `emailverify_watchers_lagged_total` | | times a watcher fell so far behind the shared pages that it read the gap itself |
//! | `emailverify_support_sign_ins_total` | mode | support console sessions begun: `header` (from the proxy's header), `tokens` (name and token) |
//! | `emailverify_support_refused_total` | reason | support console requests refused: `anonymous`, `wrong_token`, `throttled`, `csrf`, `cross_site` |
//! | `emailverify_support_actions_total` | action, outcome | support console actions (`resend`, `cancel`, `lift`, `erase`, `show`) by `done` or `refused` |
//!
//! Link page views that never lead to a confirmation (mail scanners) are
//! `link_page_views_total{result="live"}` minus `confirmations_total{via="link"}`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the process-wide recorder once; later calls share it.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS).ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP: Duration = Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every few seconds until `stop`.
/// The recorder keeps each sample until then: without this task, a process that nobody
/// scrapes would keep every latency it ever measured (its memory grew with the work).
pub async fn upkeep(stop: tokio_util::sync::CancellationToken) {
    let Some(handle) = handle() else { return };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(UPKEEP) => handle.run_upkeep(),
        }
    }
}

/// Exports the series that alerts watch with a value of 0 before anything happened, so an
/// alert on their increase works from the first scrape.
pub fn init() {
    for reason in ["missing", "wrong"] {
        metrics::counter!("emailverify_auth_failures_total", "reason" => reason).increment(0);
    }
    for port in ["grpc", "http", "admin"] {
        metrics::gauge!("emailverify_connections_open", "port" => port).increment(0.0);
        for kind in ["fd_exhausted", "other"] {
            metrics::counter!("emailverify_accept_errors_total", "port" => port, "kind" => kind)
                .increment(0);
        }
    }
    for port in ["grpc", "http"] {
        metrics::counter!("emailverify_connections_refused_total", "port" => port, "reason" => "per_peer")
            .increment(0);
        for reason in ["headers", "idle"] {
            metrics::counter!("emailverify_connections_timed_out_total", "port" => port, "reason" => reason)
                .increment(0);
        }
    }
    metrics::counter!("emailverify_cross_site_posts_total").increment(0);
    metrics::counter!("emailverify_connections_evicted_total", "port" => "http").increment(0);
    for kind in ["poll", "catch_up", "start", "publish"] {
        metrics::counter!("emailverify_feed_reads_total", "kind" => kind).increment(0);
    }
    metrics::gauge!("emailverify_watchers").increment(0.0);
    metrics::counter!("emailverify_watchers_refused_total").increment(0);
    metrics::counter!("emailverify_watchers_closed_total", "reason" => "idle").increment(0);
    metrics::counter!("emailverify_watchers_lagged_total").increment(0);
}

/// A support console session begun (`header` or `tokens`).
pub fn support_sign_in(mode: &'static str) {
    metrics::counter!("emailverify_support_sign_ins_total", "mode" => mode).increment(1);
}

/// A support console request refused, and why.
pub fn support_refused(reason: &'static str) {
    metrics::counter!("emailverify_support_refused_total", "reason" => reason).increment(1);
}

/// A support console action and its outcome (`done` or `refused`).
pub fn support_action(action: &'static str, outcome: &'static str) {
    metrics::counter!("emailverify_support_actions_total", "action" => action, "outcome" => outcome)
        .increment(1);
}

/// One read of the events table for the change feed (`poll`, `catch_up`, `start`, `publish`).
pub fn feed_read(kind: &'static str) {
    metrics::counter!("emailverify_feed_reads_total", "kind" => kind).increment(1);
}

/// A WatchEvents watcher opened (`+1`) or ended (`-1`).
pub fn watchers(delta: f64) {
    metrics::gauge!("emailverify_watchers").increment(delta);
}

pub fn watcher_refused() {
    metrics::counter!("emailverify_watchers_refused_total").increment(1);
}

/// A watcher missed shared pages (it reads the gap from its cursor).
pub fn watcher_lagged() {
    metrics::counter!("emailverify_watchers_lagged_total").increment(1);
}

/// A watcher the server closed; `reason`: `idle`.
pub fn watcher_closed(reason: &'static str) {
    metrics::counter!("emailverify_watchers_closed_total", "reason" => reason).increment(1);
}

pub fn auth_failure(reason: &'static str) {
    metrics::counter!("emailverify_auth_failures_total", "reason" => reason).increment(1);
}

pub fn cross_site_post() {
    metrics::counter!("emailverify_cross_site_posts_total").increment(1);
}

pub fn connection_cap(port: &'static str, max: usize) {
    metrics::gauge!("emailverify_connections_max", "port" => port).set(max as f64);
}

pub fn connection_opened(port: &'static str) {
    metrics::gauge!("emailverify_connections_open", "port" => port).increment(1.0);
}

pub fn connection_closed(port: &'static str) {
    metrics::gauge!("emailverify_connections_open", "port" => port).decrement(1.0);
}

/// `reason`: `headers` (not sent in time; gRPC: the first frame) or `idle`.
pub fn connection_timed_out(port: &'static str, reason: &'static str) {
    metrics::counter!("emailverify_connections_timed_out_total", "port" => port, "reason" => reason)
        .increment(1);
}

/// A connection closed as soon as it was accepted; `reason`: `per_peer`.
pub fn connection_refused(port: &'static str, reason: &'static str) {
    metrics::counter!("emailverify_connections_refused_total", "port" => port, "reason" => reason)
        .increment(1);
}

/// An idle kept-alive connection closed early: the port neared its cap.
pub fn connection_evicted(port: &'static str) {
    metrics::counter!("emailverify_connections_evicted_total", "port" => port).increment(1);
}

/// `kind`: `fd_exhausted` or `other`.
pub fn accept_error(port: &'static str, kind: &'static str) {
    metrics::counter!("emailverify_accept_errors_total", "port" => port, "kind" => kind)
        .increment(1);
}

pub fn rpc(method: &'static str, code: tonic::Code, elapsed: Duration) {
    metrics::counter!("emailverify_rpc_requests_total", "method" => method, "code" => code_name(code)).increment(1);
    metrics::histogram!("emailverify_rpc_duration_seconds", "method" => method)
        .record(elapsed.as_secs_f64());
}

pub fn flow_requested(kind: &'static str) {
    metrics::counter!("emailverify_flows_requested_total", "kind" => kind).increment(1);
}

pub fn confirmed(outcome: &'static str, via: &'static str) {
    metrics::counter!("emailverify_confirmations_total", "outcome" => outcome, "via" => via)
        .increment(1);
}

pub fn refused(reason: &'static str) {
    metrics::counter!("emailverify_refusals_total", "reason" => reason).increment(1);
}

/// An optimistic try of a use-case: `ended` (answered: done or refused), `ran_again` (a
/// concurrent change beat it) or `needs_lock` (it went on to the locked try).
pub fn optimistic(use_case: &'static str, result: &'static str) {
    metrics::counter!("emailverify_optimistic_tries_total", "use_case" => use_case, "result" => result)
        .increment(1);
}

pub fn rate_limited(limit: &'static str) {
    metrics::counter!("emailverify_rate_limited_total", "limit" => limit).increment(1);
}

pub fn link_page_view(result: &'static str) {
    metrics::counter!("emailverify_link_page_views_total", "result" => result).increment(1);
}

/// Rows removed by retention, per table.
pub fn pruned(table: &'static str, rows: u64) {
    metrics::counter!("emailverify_retention_pruned_total", "table" => table).increment(rows);
}

pub fn mail(event: &'static str, template: &str) {
    let name = match event {
        "sent" => "emailverify_mail_sent_total",
        "retried" => "emailverify_mail_retried_total",
        "dead" => "emailverify_mail_dead_total",
        _ => "emailverify_mail_deferred_total",
    };
    metrics::counter!(name, "template" => template.to_owned()).increment(1);
}

/// A message the inbound listener accepted, by what it came to: `bounced`, `delayed`,
/// `complained`, `repeat` (of a kind the mail already has: not written again), `ignored`
/// (a report of nothing we act on), `unmatched` (no mail of ours: no tag whose MAC holds),
/// `unparseable` (not a report we read).
pub fn inbound_report(outcome: &'static str) {
    metrics::counter!("emailverify_inbound_reports_total", "outcome" => outcome).increment(1);
}

/// A recipient the inbound listener refused (it is no relay).
pub fn inbound_recipient_refused() {
    metrics::counter!("emailverify_inbound_recipients_refused_total").increment(1);
}

/// An inbound SMTP connection answered 421 and closed: `per_peer` (its address had
/// `EMAILVERIFY_INBOUND_MAX_SESSIONS_PER_PEER` open) or `busy` (the listener was full).
pub fn inbound_session_refused(reason: &'static str) {
    metrics::counter!("emailverify_inbound_sessions_refused_total", "reason" => reason)
        .increment(1);
}

/// An inbound SMTP session closed early: `silent` (no progress in time), `lifetime`,
/// `bare_lf`, `too_long` (a line), `too_many_commands`, `starttls_injection`,
/// `tls_handshake`, `gone`.
pub fn inbound_session_closed(reason: &'static str) {
    metrics::counter!("emailverify_inbound_sessions_closed_total", "reason" => reason).increment(1);
}

/// A 450 4.7.1 to a peer past its unmatched reports for the minute.
pub fn inbound_throttled() {
    metrics::counter!("emailverify_inbound_throttled_total").increment(1);
}

pub fn ready(ready: bool) {
    metrics::gauge!("emailverify_ready").set(if ready { 1.0 } else { 0.0 });
}

pub fn outbox(depth: u64, dead: u64, oldest_age: Duration) {
    metrics::gauge!("emailverify_outbox_depth").set(depth as f64);
    metrics::gauge!("emailverify_outbox_dead").set(dead as f64);
    metrics::gauge!("emailverify_outbox_oldest_age_seconds").set(oldest_age.as_secs_f64());
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
