//! The support console (API.md, "The support console (release 3)"; docs/support.md), on the
//! admin port under `/support/`: support staff find a customer by user id or by any
//! spelling of their inbox, see on one page why their mail did not arrive and which step
//! their request is at, and take the one safe action that unblocks them — each action
//! confirmed, given a reason, and written to the customer's audit trail and the feed as
//! `support:<name>` through the same core use-cases (and limits) as the API.
//!
//! Who may enter (`EMAILVERIFY_SUPPORT_AUTH`, `auth.rs`): nobody (404), the agent an
//! authenticating proxy names in a header, or an agent who signs in with a name and token.
//! Either way the console keeps a session (`session.rs`) whose CSRF token every form
//! carries; a POST the browser marks as sent from another site is refused before anything
//! else. The pages (`view.rs`, `customer.rs`) need no JavaScript and speak English and
//! Nepali (`texts.rs`, `words.rs`) after the browser's `Accept-Language`.

mod actions;
mod auth;
mod customer;
mod front;
mod session;
mod texts;
mod view;
mod words;

pub use auth::SupportAuth;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use jiff::tz::TimeZone;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::core::Core;
use crate::core::context::{self, RequestContext};
use crate::domain::Locale;
use auth::{Throttle, valid_name};
use customer::href;
use session::Sessions;
use view::{Chrome, Views};

/// Wrong sign-ins allowed per agent name, and per client address, in `SIGN_IN_WINDOW`.
const WRONG_PER_NAME: u32 = 5;
const WRONG_PER_CLIENT: u32 = 20;
const SIGN_IN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The console: its settings, sessions and sign-in throttles.
pub struct Console {
    core: Arc<Core>,
    auth: SupportAuth,
    sessions: Sessions,
    by_name: Throttle,
    by_client: Throttle,
    views: Views,
    /// Cookies are `Secure` when the public URL is https.
    secure: bool,
}

/// A signed-in agent on this request.
struct Entry {
    agent: String,
    csrf: String,
    /// The `Set-Cookie` of a session begun on this request.
    cookie: Option<String>,
}

impl Entry {
    fn chrome(&self) -> Chrome<'_> {
        Chrome {
            agent: Some(&self.agent),
            csrf: &self.csrf,
            cookie: self.cookie.clone(),
        }
    }
}

impl Console {
    /// `None` when the console is off.
    pub fn new(
        core: Arc<Core>,
        auth: SupportAuth,
        time_zone: TimeZone,
        public_url: &str,
    ) -> Option<Arc<Self>> {
        if matches!(auth, SupportAuth::Off) {
            return None;
        }
        Some(Arc::new(Self {
            core,
            auth,
            sessions: Sessions::default(),
            by_name: Throttle::new(WRONG_PER_NAME, SIGN_IN_WINDOW),
            by_client: Throttle::new(WRONG_PER_CLIENT, SIGN_IN_WINDOW),
            views: Views::new(time_zone),
            secure: public_url.starts_with("https://"),
        }))
    }

    /// The agent this request comes from, or the page that refuses it.
    // The error is the page that answers the request (returned once per request).
    #[allow(clippy::result_large_err)]
    fn entry(&self, headers: &HeaderMap, locale: Locale) -> Result<Entry, Response> {
        let session = self.sessions.of(headers);
        match &self.auth {
            SupportAuth::Header(name) => {
                let agent = headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|a| valid_name(a));
                let Some(agent) = agent else {
                    crate::metrics::support_refused("anonymous");
                    return Err(self.views.message(
                        StatusCode::UNAUTHORIZED,
                        locale,
                        "refused_title",
                        texts::texts(locale)["refused_header"],
                        None,
                        Chrome::default(),
                    ));
                };
                match session.filter(|s| s.agent == agent) {
                    Some(s) => Ok(Entry {
                        agent: s.agent,
                        csrf: s.csrf,
                        cookie: None,
                    }),
                    None => {
                        let (id, s) = self.sessions.begin(agent);
                        crate::metrics::support_sign_in("header");
                        tracing::info!(agent, "support console session begun (header)");
                        Ok(Entry {
                            agent: s.agent,
                            csrf: s.csrf,
                            cookie: Some(session::set_cookie(&id, self.secure)),
                        })
                    }
                }
            }
            SupportAuth::Tokens(_) => match session {
                Some(s) => Ok(Entry {
                    agent: s.agent,
                    csrf: s.csrf,
                    cookie: None,
                }),
                None => {
                    crate::metrics::support_refused("anonymous");
                    Err(self.sign_in_page(StatusCode::UNAUTHORIZED, locale, "", "expired"))
                }
            },
            SupportAuth::Off => Err(StatusCode::NOT_FOUND.into_response()),
        }
    }

    /// The agent of a POST: not from another site, signed in, with the session's CSRF
    /// token; else the page that refuses it (and nothing is done).
    #[allow(clippy::result_large_err)]
    fn post_entry(&self, headers: &HeaderMap, csrf: &str) -> Result<(Entry, Locale), Response> {
        let locale = locale_of(headers);
        if cross_site(headers) {
            crate::metrics::support_refused("cross_site");
            tracing::info!("support console POST from another site refused");
            return Err(self.views.message(
                StatusCode::FORBIDDEN,
                locale,
                "cross_site_title",
                texts::texts(locale)["cross_site"],
                None,
                Chrome::default(),
            ));
        }
        let entry = self.entry(headers, locale)?;
        // A session begun on this very request has no form yet: its token cannot match.
        if entry.cookie.is_some() || !session::same_token(&entry.csrf, csrf) {
            crate::metrics::support_refused("csrf");
            let problem = texts::texts(locale)["csrf"];
            return Err(self.views.message(
                StatusCode::FORBIDDEN,
                locale,
                "cross_site_title",
                problem,
                Some(("/support/", "back_find")),
                entry.chrome(),
            ));
        }
        Ok((entry, locale))
    }

    fn sign_in_page(
        &self,
        status: StatusCode,
        locale: Locale,
        name: &str,
        problem: &str,
    ) -> Response {
        let t = texts::texts(locale);
        self.views.render(
            status,
            locale,
            "sign_in.html",
            t["sign_in_title"],
            minijinja::context! { name => name, problem => t.get(problem).copied().unwrap_or("") },
            Chrome::default(),
        )
    }

    fn find_page(
        &self,
        status: StatusCode,
        locale: Locale,
        entry: &Entry,
        results: &[String],
        notice: &str,
        problem: &str,
    ) -> Response {
        let t = texts::texts(locale);
        let results: Vec<_> = results
            .iter()
            .map(|id| minijinja::context! { id => id, href => href("/support/customer", &[("id", id)]) })
            .collect();
        self.views.render(
            status,
            locale,
            "find.html",
            t["find_title"],
            minijinja::context! {
                results => results,
                notice => t.get(notice).copied().unwrap_or(""),
                problem => t.get(problem).copied().unwrap_or(""),
            },
            entry.chrome(),
        )
    }

    /// The audit context of the agent's request.
    fn context(entry: &Entry, headers: &HeaderMap) -> RequestContext {
        RequestContext {
            actor: format!("support:{}", entry.agent),
            request_id: context::request_id(
                headers.get("x-request-id").and_then(|v| v.to_str().ok()),
            ),
        }
    }
}

/// The page's language: the browser's `Accept-Language`, among English and Nepali.
fn locale_of(headers: &HeaderMap) -> Locale {
    let asked = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept_language::intersection(asked, &["en", "ne"])
        .first()
        .map(|tag| Locale::from_tag(tag))
        .unwrap_or_default()
}

/// A POST the browser says another site sent: `Sec-Fetch-Site` other than `same-origin`,
/// or an `Origin` (`null` included) whose host is not the one the request was sent to
/// (`Host`, or the `X-Forwarded-Host` of a proxy in front: no page of another site can
/// set either). A client that sends neither header is no browser acting for another site.
fn cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers
        .get_all("sec-fetch-site")
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"same-origin"));
    let hosts: Vec<&[u8]> = [header::HOST, HeaderName::from_static("x-forwarded-host")]
        .iter()
        .filter_map(|h| headers.get(h))
        .map(|v| v.as_bytes())
        .collect();
    let origin = headers.get_all(header::ORIGIN).iter().any(|v| {
        let host = v
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, host)| host.as_bytes());
        match host {
            Some(host) => !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)),
            None => true,
        }
    });
    fetch_site || origin
}

/// The console's routes, with the link pages' headers.
pub fn router(console: Arc<Console>) -> Router {
    let csp = HeaderValue::from_str(&console.views.content_security_policy())
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    Router::new()
        .route(
            "/support",
            get(|| async { Redirect::permanent("/support/") }),
        )
        .route("/support/", get(front::home))
        .route("/support/sign-in", post(front::sign_in))
        .route("/support/sign-out", post(front::sign_out))
        .route("/support/find", post(front::find))
        .route("/support/customer", get(actions::customer))
        .route("/support/confirm", get(actions::confirm))
        .route("/support/act", post(actions::act))
        .route(
            "/support/{*rest}",
            get(front::no_such_page).post(front::no_such_page),
        )
        // A form carries a name and a token, a search, or a reason of 200 characters.
        .layer(DefaultBodyLimit::max(8 * 1024))
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
            HeaderValue::from_static("same-origin"),
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
        .with_state(console)
}
