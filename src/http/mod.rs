//! The HTTP link shim: the pages people reach by clicking a link in their inbox, plus
//! liveness and readiness. Same process, same core as gRPC: no second network hop.
//!
//! A GET never changes anything (mail scanners pre-fetch links); only the POSTs of the
//! page's buttons confirm, cancel or resend.

pub mod pages;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::core::{Core, CoreError};
use crate::domain::Token;
use pages::Pages;

pub struct HttpState {
    pub core: Arc<Core>,
    pub pages: Pages,
    pub success_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TokenField {
    #[serde(default)]
    token: String,
}

pub fn router(state: Arc<HttpState>) -> Router {
    let csp = HeaderValue::from_str(&state.pages.content_security_policy())
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    Router::new()
        .route("/verify", get(show_link).post(confirm))
        .route("/cancel", post(cancel))
        .route("/resend", post(resend))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        // A form carries one 43-character token: anything large is not ours.
        .layer(DefaultBodyLimit::max(4 * 1024))
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
async fn show_link(State(s): State<Arc<HttpState>>, Query(q): Query<TokenField>) -> Response {
    let token = match parse(&q.token) {
        Ok(t) => t,
        Err(e) => return s.pages.error(&e, None),
    };
    match s.core.inspect_token(&token).await {
        Ok(flow) => s.pages.confirm(&flow, &token),
        Err(e) => s.pages.error(&e, Some(&token)),
    }
}

async fn confirm(State(s): State<Arc<HttpState>>, Form(f): Form<TokenField>) -> Response {
    let token = match parse(&f.token) {
        Ok(t) => t,
        Err(e) => return s.pages.error(&e, None),
    };
    match s.core.confirm_link(&token).await {
        Ok(c) => match &s.success_url {
            Some(url) => Redirect::to(url).into_response(),
            None => s.pages.confirmed(&c),
        },
        Err(e) => s.pages.error(&e, Some(&token)),
    }
}

async fn cancel(State(s): State<Arc<HttpState>>, Form(f): Form<TokenField>) -> Response {
    let token = match parse(&f.token) {
        Ok(t) => t,
        Err(e) => return s.pages.error(&e, None),
    };
    match s.core.cancel_by_token(&token).await {
        Ok(_) => s.pages.cancelled(),
        Err(CoreError::NoPendingFlow) => s.pages.flow_gone(),
        Err(e) => s.pages.error(&e, None),
    }
}

async fn resend(State(s): State<Arc<HttpState>>, Form(f): Form<TokenField>) -> Response {
    let token = match parse(&f.token) {
        Ok(t) => t,
        Err(e) => return s.pages.error(&e, None),
    };
    match s.core.resend_by_token(&token).await {
        Ok(flow) => s.pages.resent(&flow),
        Err(CoreError::NoPendingFlow) => s.pages.flow_gone(),
        Err(e) => s.pages.error(&e, None),
    }
}

async fn ready(State(s): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    if s.core.store().ping().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
    }
}
