//! The console's front: the search page (or the sign-in form), signing in and out, and
//! the search itself.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::{self, valid_name};
use super::console::{Console, cross_site, locale_of};
use super::customer::href;
use super::view::Chrome;
use super::{SupportAuth, session, texts};
use crate::core::context;
use crate::core::support::Search;

#[derive(Deserialize)]
pub(super) struct HomeQuery {
    #[serde(default)]
    done: String,
}

/// `GET /support/`: the search (the sign-in form for an agent not signed in).
pub(super) async fn home(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<HomeQuery>,
) -> Response {
    let locale = locale_of(&headers);
    if matches!(c.auth, SupportAuth::Tokens(_)) && c.sessions.of(&headers).is_none() {
        return c.sign_in_page(StatusCode::OK, locale, "", "");
    }
    match c.entry(&headers, locale) {
        Ok(entry) => {
            let notice = if q.done == "erase" { "done_erase" } else { "" };
            c.find_page(StatusCode::OK, locale, &entry, &[], notice, "")
        }
        Err(page) => page,
    }
}

#[derive(Deserialize)]
pub(super) struct SignIn {
    #[serde(default)]
    name: String,
    #[serde(default)]
    token: String,
}

/// `POST /support/sign-in` (`tokens` only): a session for a right name and token, unless
/// the name or the client failed too often lately.
pub(super) async fn sign_in(
    State(c): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<SignIn>,
) -> Response {
    let locale = locale_of(&headers);
    let SupportAuth::Tokens(agents) = &c.auth else {
        return no_such_page(State(c.clone()), headers).await;
    };
    if cross_site(&headers) {
        crate::metrics::support_refused("cross_site");
        return c.views.message(
            StatusCode::FORBIDDEN,
            locale,
            "cross_site_title",
            texts::texts(locale)["cross_site"],
            None,
            Chrome::default(),
        );
    }
    let name = f.name.trim();
    let shown_name = if valid_name(name) { name } else { "" };
    let name_key = format!(
        "name:{}",
        name.chars().take(64).collect::<String>().to_lowercase()
    );
    let client_key = format!("client:{}", peer.ip());
    if !c.by_name.allows(&name_key) || !c.by_client.allows(&client_key) {
        crate::metrics::support_refused("throttled");
        tracing::warn!("support console sign-in refused: too many failures");
        return c.sign_in_page(
            StatusCode::TOO_MANY_REQUESTS,
            locale,
            shown_name,
            "throttled",
        );
    }
    if !valid_name(name) || !auth::check(agents, name, &f.token) {
        c.by_name.failed(&name_key);
        c.by_client.failed(&client_key);
        crate::metrics::support_refused("wrong_token");
        tracing::info!("support console sign-in refused: wrong name or token");
        return c.sign_in_page(StatusCode::UNAUTHORIZED, locale, shown_name, "wrong_token");
    }
    let (id, _) = c.sessions.begin(name);
    crate::metrics::support_sign_in("tokens");
    tracing::info!(agent = name, "support console sign-in");
    let mut resp = Redirect::to("/support/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id, c.secure)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
pub(super) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// `POST /support/sign-out`: the session ends.
pub(super) async fn sign_out(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(page) = c.post_entry(&headers, &f.csrf) {
        return page;
    }
    c.sessions.end(&headers);
    let mut resp = Redirect::to("/support/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(c.secure)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
pub(super) struct FindForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    q: String,
}

/// `POST /support/find` (a POST, so that an address never sits in a URL or an access
/// log): one customer opens at once; several are listed.
pub(super) async fn find(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<FindForm>,
) -> Response {
    let (entry, locale) = match c.post_entry(&headers, &f.csrf) {
        Ok(e) => e,
        Err(page) => return page,
    };
    let search = match Search::parse(&f.q) {
        Ok(s) => s,
        Err(_) => {
            return c.find_page(
                StatusCode::BAD_REQUEST,
                locale,
                &entry,
                &[],
                "",
                "bad_query",
            );
        }
    };
    let ctx = Console::context(&entry, &headers);
    match context::scope(ctx, c.core.find_customers(&search)).await {
        Ok(found) if found.is_empty() => {
            c.find_page(StatusCode::NOT_FOUND, locale, &entry, &[], "", "found_none")
        }
        Ok(found) if found.len() == 1 => {
            Redirect::to(&href("/support/customer", &[("id", &found[0])])).into_response()
        }
        Ok(found) => c.find_page(StatusCode::OK, locale, &entry, &found, "", ""),
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, "support console search failed");
            c.find_page(
                StatusCode::SERVICE_UNAVAILABLE,
                locale,
                &entry,
                &[],
                "",
                "broken",
            )
        }
    }
}

/// Any other path under `/support/`.
pub(super) async fn no_such_page(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let locale = locale_of(&headers);
    c.views.message(
        StatusCode::NOT_FOUND,
        locale,
        "no_such_page",
        "",
        Some(("/support/", "back_find")),
        Chrome::default(),
    )
}
