//! A visit to a link page: the shim's state (`HttpState`), who is asking and in which
//! language, the token from the query or form, and how a refusal is answered and counted
//! against the client (only what could be guessing counts). `links.rs` serves the pages
//! with it; `mod.rs` routes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde::Deserialize;

use super::client::client_of;
use super::pages::{Link, Pages};
use crate::core::context::{self, RequestContext};
use crate::core::{Core, CoreError};
use crate::domain::{Locale, Token};

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
    pub(super) fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> String {
        client_of(self.trusted_proxies, peer, headers)
    }

    /// What a page knows of its link: its flow and where that stands now, and the page's
    /// language — the flow's, or the browser's (`Accept-Language`) when the flow chose
    /// none or the token is not one we know.
    pub(super) async fn link<'a>(&self, token: Option<&'a Token>, headers: &HeaderMap) -> Link<'a> {
        let now = self.core.now_ms();
        if let Some(token) = token
            && let Ok(Some(flow)) = self.core.link_flow(token).await
        {
            return Link {
                token: Some(token),
                locale: page_locale(flow.flow.locale, headers),
                flow: Some(flow),
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
    pub(super) fn cross_site(&self, headers: &HeaderMap) -> bool {
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
pub(super) fn browser_locale(headers: &HeaderMap) -> Locale {
    let asked = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Locale::from_accept_language(asked).unwrap_or_default()
}

/// A page's language: its flow's, or the browser's when the flow chose none (API.md,
/// release 3).
pub(super) fn page_locale(flow: Option<Locale>, headers: &HeaderMap) -> Locale {
    flow.unwrap_or_else(|| browser_locale(headers))
}

/// One request to a link page: the client it came from, which the brute-force guard
/// counts failures against, and its headers (for the page's language). (The audit
/// context of the core calls it makes is set around the whole visit by `visit`.)
pub(super) struct Visit<'h> {
    pub(super) client: String,
    pub(super) headers: &'h HeaderMap,
}

pub(super) async fn visit<'h, F: Future<Output = Response>>(
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
pub(super) async fn button<'h, F: Future<Output = Response>>(
    s: &HttpState,
    peer: SocketAddr,
    headers: &'h HeaderMap,
    raw_token: String,
    act: impl FnOnce(Visit<'h>, Token) -> F,
) -> Response {
    if s.cross_site(headers) {
        crate::metrics::cross_site_post();
        tracing::info!("link page POST from another site refused");
        // In the language of the link's flow, if the token names one (a read only).
        let token = Token::parse(&raw_token).ok();
        let locale = s.link(token.as_ref(), headers).await.locale;
        return s.pages.cross_site(locale);
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
    pub(super) async fn token(&self, v: &Visit<'_>, raw: &str) -> Result<Token, Response> {
        match parse(raw) {
            Ok(t) => Ok(t),
            Err(e) => Err(self.refuse(v, &e, None).await),
        }
    }

    /// The page for a refusal, after counting it against the client if it could be
    /// guessing.
    pub(super) async fn refuse(
        &self,
        v: &Visit<'_>,
        e: &CoreError,
        token: Option<&Token>,
    ) -> Response {
        self.failed(v, e).await;
        self.pages.error(e, self.link(token, v.headers).await)
    }

    pub(super) async fn failed(&self, v: &Visit<'_>, e: &CoreError) {
        if counts_as_failure(e) {
            self.core.link_failure(&v.client).await;
        }
    }
}

/// A link's token from a query or a form. No `Debug`: a raw token never reaches a log,
/// not even by a `{:?}` of the request.
#[derive(Default, Deserialize)]
pub struct TokenField {
    #[serde(default)]
    pub(super) token: String,
}

pub(super) fn parse(raw: &str) -> Result<Token, CoreError> {
    Token::parse(raw).map_err(|_| CoreError::InvalidToken)
}
