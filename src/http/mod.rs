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
mod links;
pub mod pages;
mod serve;
pub mod support;
mod visit;

pub use admin::admin_router;
pub use client::client_of;
pub use serve::serve;
pub use visit::HttpState;
use visit::browser_locale;

use std::sync::Arc;

use axum::Router;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

use links::{cancel, confirm, resend, show_link};

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
    let router = Router::new()
        .route("/verify", get(show_link).post(confirm))
        .route("/cancel", get(open_from_mail).post(cancel))
        .route("/resend", get(open_from_mail).post(resend))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(no_such_page)
        .method_not_allowed_fallback(wrong_method)
        // A form carries one 43-character token: anything large is not ours.
        .layer(DefaultBodyLimit::max(4 * 1024));
    with_page_headers(router, "no-referrer", csp).with_state(state)
}

/// What every page of ours is served with, the link pages and the support console alike:
/// a 15 s deadline, no caching, the page's CSP, no framing, no sniffing, and `referrer`
/// as the Referrer-Policy.
pub(crate) fn with_page_headers<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    referrer: &'static str,
    csp: HeaderValue,
) -> Router<S> {
    router
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
            HeaderValue::from_static(referrer),
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
