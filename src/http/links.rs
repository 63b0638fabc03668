//! The link pages' routes: `GET /verify` (the Confirm page, or what became of the link)
//! and the buttons' POSTs (`/verify`, `/cancel`, `/resend`).
//!
//! A confirmation that ends a flow (address verified, address changed) goes to
//! `EMAILVERIFY_SUCCESS_URL` when it is set, with `outcome` and `lang` added to its query
//! so the wallet's page can say the right thing in the right language; the first step of
//! a change always shows the built-in "now check your new inbox" page, or the person
//! would think the change done and let the second link expire (API.md, release 3).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::visit::{HttpState, TokenField, browser_locale, button, page_locale, parse, visit};
use crate::domain::{FlowKind, FlowStep, Locale, Outcome, Token};

/// `GET /verify?token=T`: the Confirm page for a live token, otherwise the page the POST
/// would give. Reads only.
pub(super) async fn show_link(
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
                let locale = page_locale(flow.locale, v.headers);
                // A change's first link names the address it changes to.
                let changes_to = match (flow.kind, flow.step) {
                    (FlowKind::Change, FlowStep::ConfirmCurrent) => s
                        .core
                        .link_flow(&token)
                        .await
                        .ok()
                        .flatten()
                        .map(|f| f.masked_new),
                    _ => None,
                };
                s.pages
                    .confirm(&flow, locale, &token, changes_to.as_deref())
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

/// The button's form, or the page for a body that is not one (415 not a form, 413 too
/// large, 400 unreadable); refused before anything is looked up, counted against nobody.
fn form_token(
    s: &HttpState,
    headers: &HeaderMap,
    form: Result<Form<TokenField>, FormRejection>,
) -> Result<String, Box<Response>> {
    match form {
        Ok(Form(f)) => Ok(f.token),
        Err(rejection) => {
            tracing::info!(status = %rejection.status(), "link page POST without its form");
            Err(Box::new(s.pages.unreadable_form(
                rejection.status(),
                browser_locale(headers),
            )))
        }
    }
}

/// `EMAILVERIFY_SUCCESS_URL` with `outcome` and `lang` set in its query (its own query
/// kept; a parameter of the same name replaced).
fn success_redirect(url: &url::Url, outcome: &str, locale: Locale) -> Response {
    let mut to = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "outcome" && k != "lang")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    to.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("outcome", outcome)
        .append_pair("lang", locale.as_tag());
    Redirect::to(to.as_str()).into_response()
}

/// Chromium keeps even `no-store` pages in its back/forward cache, so the back button
/// after Confirm would show the live-looking Confirm page again — unless the site's
/// cookies changed meanwhile, which evicts `no-store` pages. So each press of a button
/// sets a cookie that holds nothing (a counter of nothing: the time), read by no one.
fn evict_back_forward_cache(mut resp: Response, now: i64) -> Response {
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "ev_pressed={now}; Path=/; Max-Age=600; HttpOnly; SameSite=Strict"
    )) {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    resp
}

pub(super) async fn confirm(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<TokenField>, FormRejection>,
) -> Response {
    let s: &HttpState = &s;
    let raw = match form_token(s, &headers, form) {
        Ok(raw) => raw,
        Err(page) => return *page,
    };
    let now = s.core.now_ms();
    let resp = button(s, peer, &headers, raw, |v, token| async move {
        match s.core.confirm_link(&token).await {
            Ok(c) => {
                let locale = page_locale(c.flow.locale, v.headers);
                let outcome = match c.outcome {
                    Outcome::EmailVerified => Some("verified"),
                    Outcome::EmailChanged => Some("changed"),
                    Outcome::CurrentConfirmed => None,
                };
                match (&s.success_url, outcome) {
                    (Some(url), Some(outcome)) => success_redirect(url, outcome, locale),
                    _ => s.pages.confirmed(&c, locale),
                }
            }
            Err(e) => s.refuse(&v, &e, Some(&token)).await,
        }
    })
    .await;
    evict_back_forward_cache(resp, now)
}

pub(super) async fn cancel(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<TokenField>, FormRejection>,
) -> Response {
    let s: &HttpState = &s;
    let raw = match form_token(s, &headers, form) {
        Ok(raw) => raw,
        Err(page) => return *page,
    };
    let now = s.core.now_ms();
    let resp = button(s, peer, &headers, raw, |v, token| async move {
        match s.core.cancel_by_token(&token).await {
            Ok(report) => {
                let locale = page_locale(report.flow.locale, v.headers);
                s.pages.reported(&report, locale)
            }
            // A flow no longer pending (the back button, a second press): the page says
            // what became of it and when (`pages::errors`).
            Err(e) => s.refuse(&v, &e, Some(&token)).await,
        }
    })
    .await;
    evict_back_forward_cache(resp, now)
}

pub(super) async fn resend(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<TokenField>, FormRejection>,
) -> Response {
    let s: &HttpState = &s;
    let raw = match form_token(s, &headers, form) {
        Ok(raw) => raw,
        Err(page) => return *page,
    };
    let now = s.core.now_ms();
    let resp = button(s, peer, &headers, raw, |v, token| async move {
        match s.core.resend_by_token(&token).await {
            Ok(flow) => {
                let locale = page_locale(flow.locale, v.headers);
                s.pages.resent(&flow, locale)
            }
            Err(e) => s.refuse(&v, &e, Some(&token)).await,
        }
    })
    .await;
    evict_back_forward_cache(resp, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_success_url_keeps_its_query_and_gains_outcome_and_lang() {
        let url = url::Url::parse("https://wallet.example/done?from=mail&lang=xx").unwrap();
        let resp = success_redirect(&url, "changed", Locale::Ne);
        assert_eq!(resp.status(), 303);
        assert_eq!(
            resp.headers()["location"],
            "https://wallet.example/done?from=mail&outcome=changed&lang=ne"
        );
        let bare = url::Url::parse("https://wallet.example/ok").unwrap();
        let resp = success_redirect(&bare, "verified", Locale::En);
        assert_eq!(
            resp.headers()["location"],
            "https://wallet.example/ok?outcome=verified&lang=en"
        );
    }
}
