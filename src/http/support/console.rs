//! The console's state (`Console`): its sessions, sign-in throttle and views, who is
//! asking and in which language, and the cross-site check every POST passes first.
//! `front.rs` and `actions.rs` serve the pages with it; `mod.rs` routes.

use super::auth::{SupportAuth, Throttle, valid_name};
use super::customer::href;
use super::session::Sessions;
use super::view::{Chrome, Views};
use super::{customer, session, texts};
use crate::core::Core;
use crate::core::context::{self, RequestContext};
use crate::domain::Locale;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use std::sync::Arc;
use std::time::Duration;

/// Wrong sign-ins allowed per agent name, and per client address, in `SIGN_IN_WINDOW`.
const WRONG_PER_NAME: u32 = 5;
const WRONG_PER_CLIENT: u32 = 20;
const SIGN_IN_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The console: its settings, sessions and sign-in throttles.
pub struct Console {
    pub(super) core: Arc<Core>,
    pub(super) auth: SupportAuth,
    pub(super) sessions: Sessions,
    pub(super) by_name: Throttle,
    pub(super) by_client: Throttle,
    pub(super) views: Views,
    /// Cookies are `Secure` when the public URL is https.
    pub(super) secure: bool,
}

/// A signed-in agent on this request.
pub(super) struct Entry {
    pub(super) agent: String,
    pub(super) csrf: String,
    /// The `Set-Cookie` of a session begun on this request.
    pub(super) cookie: Option<String>,
}

impl Entry {
    pub(super) fn chrome(&self) -> Chrome<'_> {
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
            views: Views::new(time_zone, &[("customer.html", customer::TEMPLATE)]),
            secure: public_url.starts_with("https://"),
        }))
    }

    /// The agent this request comes from, or the page that refuses it.
    // The error is the page that answers the request (returned once per request).
    #[allow(clippy::result_large_err)]
    pub(super) fn entry(&self, headers: &HeaderMap, locale: Locale) -> Result<Entry, Response> {
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
    pub(super) fn post_entry(
        &self,
        headers: &HeaderMap,
        csrf: &str,
    ) -> Result<(Entry, Locale), Response> {
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

    pub(super) fn sign_in_page(
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

    pub(super) fn find_page(
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
    pub(super) fn context(entry: &Entry, headers: &HeaderMap) -> RequestContext {
        RequestContext {
            actor: format!("support:{}", entry.agent),
            request_id: context::request_id(
                headers.get("x-request-id").and_then(|v| v.to_str().ok()),
            ),
        }
    }
}

/// The page's language: the browser's `Accept-Language`, among English and Nepali.
pub(super) fn locale_of(headers: &HeaderMap) -> Locale {
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
pub(super) fn cross_site(headers: &HeaderMap) -> bool {
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
