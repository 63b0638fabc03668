//! The HTTP link shim: the pages people reach by clicking a link in their inbox, plus
//! liveness and readiness; and the admin port's `/metrics`. Same process, same core as
//! gRPC: no second network hop.
//!
//! A GET never changes anything (mail scanners pre-fetch links); only the POSTs of the
//! page's buttons confirm, cancel or resend, and only when the browser does not mark them
//! as sent from another site.
//!
//! [`serve`] runs the connections itself (axum's `serve` has no header deadline): a client
//! must send its request headers within the header timeout, and how many connections are
//! open is bounded by whoever yields them (`startup`'s accept loop).

mod client;
pub mod pages;
mod serve;

pub use client::client_of;
pub use serve::serve;

use std::sync::Arc;

use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::core::context::{self, RequestContext};
use crate::core::{Core, CoreError};
use crate::domain::Token;
use pages::Pages;

pub struct HttpState {
    pub core: Arc<Core>,
    pub pages: Pages,
    /// Where a confirmation redirects (an http(s) URL); its origin is allowed in the
    /// pages' `form-action`, or the browser would not follow the redirect of the form.
    pub success_url: Option<url::Url>,
    /// The origin of the public URL: a POST whose `Origin` is another one is cross-site.
    pub public_origin: String,
    /// How many proxies in front of the HTTP port append to X-Forwarded-For (0: none).
    pub trusted_proxies: usize,
    /// The Prometheus recorder's handle (absent if another recorder was installed first).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl HttpState {
    fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> String {
        client_of(self.trusted_proxies, peer, headers)
    }

    /// A POST that the browser says another site sent: `Sec-Fetch-Site: cross-site`, or an
    /// `Origin` that is not the public URL's. `Origin: null` tells nothing (a browser sends
    /// it for a form on a page with `Referrer-Policy: no-referrer`, as ours are), so then
    /// `Sec-Fetch-Site` decides; a client that sends neither is no browser acting for
    /// another site.
    fn cross_site(&self, headers: &HeaderMap) -> bool {
        let fetch_site_says = headers
            .get_all("sec-fetch-site")
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        let origin_says = headers.get_all(header::ORIGIN).iter().any(|v| {
            let origin = v.as_bytes();
            origin != b"null" && !origin.eq_ignore_ascii_case(self.public_origin.as_bytes())
        });
        fetch_site_says || origin_says
    }
}

/// One request to a link page: the client it came from, which the brute-force guard
/// counts failures against. (The audit context of the core calls it makes is set around
/// the whole visit by `visit`.)
struct Visit {
    client: String,
}

async fn visit<F: Future<Output = Response>>(
    s: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
    page: impl FnOnce(Visit) -> F,
) -> Response {
    let ctx = RequestContext {
        actor: "link-page".into(),
        request_id: context::request_id(headers.get("x-request-id").and_then(|v| v.to_str().ok())),
    };
    let client = s.client(peer, headers);
    // Every log line of the page carries its request id.
    let span = tracing::info_span!("page", request_id = %ctx.request_id);
    let page = context::scope(ctx, async move {
        // A client that failed too often is refused before its token is even looked at.
        if let Err(e) = s.core.link_guard(&client).await {
            return s.pages.error(&e, None);
        }
        page(Visit { client }).await
    });
    tracing::Instrument::instrument(page, span).await
}

/// A page's button (a form POST of the token): refused at once if the browser says another
/// site sent it (403, counted against nobody: the client is the victim, not a guesser);
/// else the token is parsed (a malformed one gets the "not valid" page), then `act` runs
/// with it.
async fn button<F: Future<Output = Response>>(
    s: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
    raw_token: String,
    act: impl FnOnce(Visit, Token) -> F,
) -> Response {
    if s.cross_site(headers) {
        crate::metrics::cross_site_post();
        tracing::info!("link page POST from another site refused");
        return s.pages.cross_site();
    }
    visit(s, peer, headers, |v| async move {
        match s.token(&v, &raw_token).await {
            Ok(token) => act(v, token).await,
            Err(page) => page,
        }
    })
    .await
}

/// Failures that look like guessing or replaying links count against the client.
fn counts_as_failure(e: &CoreError) -> bool {
    matches!(
        e,
        CoreError::InvalidToken
            | CoreError::TokenNotFound
            | CoreError::TokenUsed
            | CoreError::TokenSuperseded
            | CoreError::TokenExpired
    )
}

impl HttpState {
    /// The form's token, or the "not valid" page (a malformed token counts as a failure).
    async fn token(&self, v: &Visit, raw: &str) -> Result<Token, Response> {
        match parse(raw) {
            Ok(t) => Ok(t),
            Err(e) => Err(self.refuse(v, &e, None).await),
        }
    }

    /// The page for a refusal, after counting it against the client if it looks like
    /// guessing or replaying links.
    async fn refuse(&self, v: &Visit, e: &CoreError, token: Option<&Token>) -> Response {
        self.failed(v, e).await;
        self.pages.error(e, token)
    }

    async fn failed(&self, v: &Visit, e: &CoreError) {
        if counts_as_failure(e) {
            self.core.link_failure(&v.client).await;
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenField {
    #[serde(default)]
    token: String,
}

/// The public port: the link pages, `/healthz` and `/readyz`.
pub fn router(state: Arc<HttpState>) -> Router {
    let success_origin = state
        .success_url
        .as_ref()
        .map(|u| u.origin().ascii_serialization());
    let csp = HeaderValue::from_str(
        &state
            .pages
            .content_security_policy(success_origin.as_deref()),
    )
    .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    Router::new()
        .route("/verify", get(show_link).post(confirm))
        .route("/cancel", post(cancel))
        .route("/resend", post(resend))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        // A form carries one 43-character token: anything large is not ours.
        .layer(DefaultBodyLimit::max(4 * 1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(15),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(state)
}

/// The admin port (`EMAILVERIFY_ADMIN_ADDR`): `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(prometheus))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .layer(DefaultBodyLimit::max(1024))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(15),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .with_state(state)
}

fn parse(raw: &str) -> Result<Token, CoreError> {
    Token::parse(raw).map_err(|_| CoreError::InvalidToken)
}

/// `GET /verify?token=T`: the Confirm page for a live token, otherwise the page the POST
/// would give. Reads only.
async fn show_link(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<TokenField>,
) -> Response {
    let s: &HttpState = &s;
    visit(s, peer, &headers, |_| async move {
        let result = match parse(&q.token) {
            Ok(token) => s.core.inspect_token(&token).await.map(|flow| (flow, token)),
            Err(e) => Err(e),
        };
        match result {
            Ok((flow, token)) => {
                crate::metrics::link_page_view("live");
                s.pages.confirm(&flow, &token)
            }
            Err(e) => {
                // Not counted against the client: a GET changes nothing, so a mail
                // scanner fetching stale links cannot lock out the users behind its IP.
                // The lock-out (checked above) still applies.
                crate::metrics::link_page_view(e.reason());
                s.pages.error(&e, Token::parse(&q.token).ok().as_ref())
            }
        }
    })
    .await
}

async fn confirm(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<TokenField>,
) -> Response {
    let s: &HttpState = &s;
    button(s, peer, &headers, f.token, |v, token| async move {
        match s.core.confirm_link(&token).await {
            Ok(c) => match &s.success_url {
                Some(url) => Redirect::to(url.as_str()).into_response(),
                None => s.pages.confirmed(&c),
            },
            Err(e) => s.refuse(&v, &e, Some(&token)).await,
        }
    })
    .await
}

async fn cancel(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<TokenField>,
) -> Response {
    let s: &HttpState = &s;
    button(s, peer, &headers, f.token, |v, token| async move {
        match s.core.cancel_by_token(&token).await {
            Ok(_) => s.pages.cancelled(),
            Err(CoreError::NoPendingFlow) => s.pages.flow_gone(),
            Err(e) => s.refuse(&v, &e, None).await,
        }
    })
    .await
}

async fn resend(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<TokenField>,
) -> Response {
    let s: &HttpState = &s;
    button(s, peer, &headers, f.token, |v, token| async move {
        match s.core.resend_by_token(&token).await {
            Ok(flow) => s.pages.resent(&flow),
            Err(CoreError::NoPendingFlow) => s.pages.flow_gone(),
            Err(e) => s.refuse(&v, &e, None).await,
        }
    })
    .await
}

/// Prometheus text format; the outbox gauges are read from the database at each scrape.
async fn prometheus(State(s): State<Arc<HttpState>>) -> Response {
    let Some(handle) = &s.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process",
        )
            .into_response();
    };
    if let Ok(stats) = s.core.outbox_stats().await {
        crate::metrics::outbox(
            stats.pending,
            stats.dead,
            Duration::from_millis(stats.oldest_pending_age_ms as u64),
        );
    }
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

async fn ready(State(s): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    if s.core.ready().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    }
}
