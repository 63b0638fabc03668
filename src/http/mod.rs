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

mod admin;
mod client;
pub mod pages;
mod serve;
pub mod support;

pub use admin::admin_router;
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
use axum::routing::get;
use serde::Deserialize;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::core::context::{self, RequestContext};
use crate::core::{Core, CoreError};
use crate::domain::{Locale, Token};
use pages::{Link, Pages};

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

    /// What a page knows of its link: the flow's language and whether it is pending, if
    /// the token is one we know; else the browser's language (`Accept-Language`).
    async fn link<'a>(&self, token: Option<&'a Token>, headers: &HeaderMap) -> Link<'a> {
        let now = self.core.now_ms();
        if let Some(token) = token
            && let Ok(Some((flow, pending))) = self.core.link_flow(token).await
        {
            return Link {
                token: Some(token),
                locale: flow.locale,
                pending,
                now,
            };
        }
        Link::none(browser_locale(headers), now)
    }

    /// A POST that the browser says another site sent: `Sec-Fetch-Site: cross-site`, or an
    /// `Origin` that is not the public URL's — `null` included (API.md, release 3): a
    /// sandboxed frame, a page of another site with `no-referrer`, an older Safari. Our own
    /// forms send our origin: the pages say `<meta name="referrer" content="same-origin">`
    /// (`pages.rs`), which keeps the Referer from every other site as `no-referrer` does,
    /// but lets the browser name us in `Origin` on our own POSTs. A client that sends
    /// neither header is no browser acting for another site.
    fn cross_site(&self, headers: &HeaderMap) -> bool {
        let fetch_site_says = headers
            .get_all("sec-fetch-site")
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        let origin_says = headers.get_all(header::ORIGIN).iter().any(|v| {
            !v.as_bytes()
                .eq_ignore_ascii_case(self.public_origin.as_bytes())
        });
        fetch_site_says || origin_says
    }
}

/// The language a browser asks for, among those the pages speak (English by default).
fn browser_locale(headers: &HeaderMap) -> Locale {
    let asked = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept_language::intersection(asked, &["en", "ne"])
        .first()
        .map(|tag| Locale::from_tag(tag))
        .unwrap_or_default()
}

/// One request to a link page: the client it came from, which the brute-force guard
/// counts failures against, and its headers (for the page's language). (The audit
/// context of the core calls it makes is set around the whole visit by `visit`.)
struct Visit<'h> {
    client: String,
    headers: &'h HeaderMap,
}

async fn visit<'h, F: Future<Output = Response>>(
    s: &HttpState,
    peer: SocketAddr,
    headers: &'h HeaderMap,
    page: impl FnOnce(Visit<'h>) -> F,
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
            return s.pages.error(&e, s.link(None, headers).await);
        }
        page(Visit { client, headers }).await
    });
    tracing::Instrument::instrument(page, span).await
}

/// A page's button (a form POST of the token): refused at once if the browser says another
/// site sent it (403, counted against nobody: the client is the victim, not a guesser);
/// else the token is parsed (a malformed one gets the "not valid" page), then `act` runs
/// with it.
async fn button<'h, F: Future<Output = Response>>(
    s: &HttpState,
    peer: SocketAddr,
    headers: &'h HeaderMap,
    raw_token: String,
    act: impl FnOnce(Visit<'h>, Token) -> F,
) -> Response {
    if s.cross_site(headers) {
        crate::metrics::cross_site_post();
        tracing::info!("link page POST from another site refused");
        return s.pages.cross_site(browser_locale(headers));
    }
    visit(s, peer, headers, |v| async move {
        match s.token(&v, &raw_token).await {
            Ok(token) => act(v, token).await,
            Err(page) => page,
        }
    })
    .await
}

/// Only failures that could be guessing count against the client (API.md, release 3): a
/// malformed or unknown token. Pressing a used, expired or superseded link again (the back
/// button, a reload) names a real link, so it never counts: behind one carrier NAT, the
/// people who do it would otherwise lock each other out.
fn counts_as_failure(e: &CoreError) -> bool {
    matches!(e, CoreError::InvalidToken | CoreError::TokenNotFound)
}

impl HttpState {
    /// The form's token, or the "not valid" page (a malformed token counts as a failure).
    async fn token(&self, v: &Visit<'_>, raw: &str) -> Result<Token, Response> {
        match parse(raw) {
            Ok(t) => Ok(t),
            Err(e) => Err(self.refuse(v, &e, None).await),
        }
    }

    /// The page for a refusal, after counting it against the client if it could be
    /// guessing.
    async fn refuse(&self, v: &Visit<'_>, e: &CoreError, token: Option<&Token>) -> Response {
        self.failed(v, e).await;
        self.pages.error(e, self.link(token, v.headers).await)
    }

    async fn failed(&self, v: &Visit<'_>, e: &CoreError) {
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
        .route("/cancel", get(open_from_mail).post(cancel))
        .route("/resend", get(open_from_mail).post(resend))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(no_such_page)
        .method_not_allowed_fallback(wrong_method)
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
    if q.token.is_empty() {
        // A result page reopened (the browser sits on /verify after a button), or a link
        // cut short: say where the link is.
        return s.pages.open_from_mail(browser_locale(&headers));
    }
    visit(s, peer, &headers, |v| async move {
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
                let token = Token::parse(&q.token).ok();
                s.pages.error(&e, s.link(token.as_ref(), v.headers).await)
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
            Ok(report) => s.pages.reported(&report),
            Err(e) => s.refuse(&v, &e, Some(&token)).await,
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
            Err(e) => s.refuse(&v, &e, Some(&token)).await,
        }
    })
    .await
}

/// `GET /cancel`, `GET /resend`: only their buttons' POSTs act; a person who reopens the
/// result page is told where the link is.
async fn open_from_mail(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    s.pages.open_from_mail(browser_locale(&headers))
}

async fn no_such_page(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    s.pages.no_such_page(browser_locale(&headers))
}

async fn wrong_method(State(s): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    s.pages.wrong_method(browser_locale(&headers))
}

pub(crate) async fn ready(State(s): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    if s.core.ready().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    }
}
