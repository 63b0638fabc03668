//! The admin port (`EMAILVERIFY_ADMIN_ADDR`): Prometheus metrics, liveness and readiness
//! as on the public port, and the support console under `/support/` when
//! `EMAILVERIFY_SUPPORT_AUTH` turns it on (`support`; else those paths are 404).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

use super::support::Console;
use super::{HttpState, ready};

/// The admin port (`EMAILVERIFY_ADMIN_ADDR`): `/metrics`, `/healthz`, `/readyz`, and the
/// support console if it is on.
pub fn admin_router(state: Arc<HttpState>, console: Option<Arc<Console>>) -> Router {
    let operators = Router::new()
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
        .with_state(state);
    match console {
        Some(console) => operators.merge(super::support::router(console)),
        None => operators,
    }
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
