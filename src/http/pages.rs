//! The link pages: plain, accessible HTML that reads well on a phone, in the flow's
//! language (`texts.rs`). One layout (minijinja, auto-escaped); the inline stylesheet is
//! allowed by a CSP hash, so the policy can forbid every other source. `CoreError` → page
//! and status, exhaustively. A page offers only buttons that can work: a finished flow's
//! old link offers none.

mod texts;

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use jiff::tz::TimeZone;
use minijinja::{Environment, context};
use sha2::{Digest, Sha256};

use crate::core::{Confirmation, CoreError, FlowView, Report, Reported};
use crate::domain::when::{duration_in_words, for_people};
use crate::domain::{FlowKind, FlowStep, Locale, Outcome, Token};
use texts::{Said, Texts, texts};

/// Contrast (WCAG 2.2 AA): text #1f2328 and muted #57606a on white 15.8:1 and 6.1:1;
/// white on the blue button 6.6:1; the red outline button 6.5:1; the focus ring (#1f2328
/// around the control, 2 px off it) 15.8:1 against the white card. Long words (masked
/// addresses) wrap anywhere, so nothing runs past the card at 200 % text size.
const CSS: &str = "body{margin:0;background:#f4f5f7;color:#1f2328;font:16px/1.5 -apple-system,'Segoe UI',Roboto,'Noto Sans Devanagari',sans-serif}main{max-width:30rem;margin:0 auto;padding:1.5rem}h1{font-size:1.4rem;margin:.5rem 0 1rem}h1,p{overflow-wrap:anywhere}.card{background:#fff;border-radius:.5rem;padding:1.5rem}form{margin:1rem 0 0}button{width:100%;min-height:3rem;font-size:1rem;border-radius:.4rem;border:0;background:#0b57d0;color:#fff;cursor:pointer;padding:.5rem 1rem}button.secondary{background:#fff;color:#b3261e;border:1px solid #b3261e}button:focus-visible,a:focus-visible{outline:3px solid #1f2328;outline-offset:2px}.muted{color:#57606a;font-size:.9rem}";

const LAYOUT: &str = r#"<!doctype html>
<html lang="{{ lang }}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex"><meta name="referrer" content="same-origin"><title>{{ title }}</title><style>{{ css|safe }}</style></head>
<body><main><div class="card">
<h1>{{ title }}</h1>
<p>{{ message }}</p>
{% for line in details %}<p class="muted">{{ line }}</p>{% endfor %}
{% if confirm %}<form method="post" action="/verify"><input type="hidden" name="token" value="{{ token }}"><button type="submit">{{ confirm }}</button></form>{% endif %}
{% if resend %}<form method="post" action="/resend"><input type="hidden" name="token" value="{{ token }}"><button type="submit">{{ resend_label }}</button></form>{% endif %}
{% if report %}<form method="post" action="/cancel"><input type="hidden" name="token" value="{{ token }}"><button class="secondary" type="submit">{{ report_label }}</button></form>{% endif %}
</div></main></body>
</html>"#;

pub struct Pages {
    env: Environment<'static>,
    css_hash: String,
    /// Where times are written for (`EMAILVERIFY_TIME_ZONE`).
    time_zone: TimeZone,
}

/// What a page knows of the link it was reached with: the token, its flow's language,
/// and whether that flow is still pending (only then can "new link" or "this wasn't me"
/// work).
#[derive(Clone, Copy)]
pub struct Link<'a> {
    pub token: Option<&'a Token>,
    pub locale: Locale,
    pub pending: bool,
    /// The service's clock, for "try again at".
    pub now: i64,
}

impl Link<'_> {
    /// No token (or none we know): the page speaks `locale` and offers no button.
    pub fn none(locale: Locale, now: i64) -> Self {
        Link {
            token: None,
            locale,
            pending: false,
            now,
        }
    }
}

/// What one page shows.
#[derive(Default)]
struct Page<'a> {
    title: &'a str,
    message: String,
    details: Vec<String>,
    confirm: &'a str,
    resend: bool,
    report: bool,
    token: Option<&'a Token>,
}

impl<'a> Page<'a> {
    fn said((title, message): Said) -> Self {
        Page {
            title,
            message: message.to_owned(),
            ..Page::default()
        }
    }
}

/// `{}` in a sentence, filled.
fn fill(sentence: &str, value: &str) -> String {
    sentence.replacen("{}", value, 1)
}

impl Pages {
    pub fn new(time_zone: TimeZone) -> Self {
        let mut env = Environment::new();
        env.add_template("page.html", LAYOUT)
            .expect("the page layout parses");
        let css_hash =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS.as_bytes()));
        Self {
            env,
            css_hash,
            time_zone,
        }
    }

    /// The pages' policy. `success_origin`: where a confirmation redirects, if elsewhere;
    /// browsers apply `form-action` to the redirects that follow a form's submission too,
    /// so without it the confirmed person would be left on a blank page.
    pub fn content_security_policy(&self, success_origin: Option<&str>) -> String {
        let form_action = match success_origin {
            Some(origin) => format!("'self' {origin}"),
            None => "'self'".to_owned(),
        };
        format!(
            "default-src 'none'; style-src 'sha256-{}'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'",
            self.css_hash
        )
    }

    fn render(&self, status: StatusCode, locale: Locale, p: Page<'_>) -> Response {
        let t = texts(locale);
        let body = self.env.get_template("page.html").and_then(|tpl| {
            tpl.render(context! {
                css => CSS,
                lang => locale.as_tag(),
                title => p.title,
                message => p.message,
                details => p.details,
                confirm => p.confirm,
                resend => p.resend && p.token.is_some(),
                report => p.report && p.token.is_some(),
                resend_label => t.resend_button,
                report_label => t.report_button,
                token => p.token.map(Token::expose).unwrap_or_default(),
            })
        });
        match body {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "page template failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
            }
        }
    }

    fn when(&self, ms: i64, locale: Locale) -> String {
        for_people(ms, locale, &self.time_zone)
    }

    /// The page of a live link: Confirm, and "This wasn't me" beside it.
    pub fn confirm(&self, flow: &FlowView, token: &Token) -> Response {
        let t = texts(flow.locale);
        let (said, button) = match (flow.kind, flow.step) {
            (FlowKind::Change, FlowStep::ConfirmCurrent) => {
                (t.change_current, t.change_current_button)
            }
            (FlowKind::Change, _) => (t.change_new, t.change_new_button),
            (FlowKind::Verify, _) => (t.verify, t.verify_button),
        };
        let page = Page {
            details: vec![fill(t.sent_to, &flow.masked_recipient)],
            confirm: button,
            report: true,
            token: Some(token),
            ..Page::said(said)
        };
        self.render(StatusCode::OK, flow.locale, page)
    }

    pub fn confirmed(&self, c: &Confirmation) -> Response {
        let t = texts(c.flow.locale);
        let page = match c.outcome {
            Outcome::EmailVerified => Page::said(t.verified),
            Outcome::CurrentConfirmed => Page {
                details: vec![fill(t.link_went_to, &c.flow.masked_recipient)],
                ..Page::said(t.current_confirmed)
            },
            Outcome::EmailChanged => Page::said(t.changed),
        };
        self.render(StatusCode::OK, c.flow.locale, page)
    }

    /// What "This wasn't me" did: from the current address, the change is stopped and
    /// changes are frozen (until when, and why); from the new address, only cancelled; a
    /// sign-up's address is taken off the account.
    pub fn reported(&self, r: &Report) -> Response {
        let locale = r.flow.locale;
        let t = texts(locale);
        let page = match r.what {
            Reported::ChangeFrozen { until } => Page {
                message: fill(t.reported_frozen.1, &self.when(until, locale)),
                details: vec![t.reported_frozen_why.to_owned()],
                ..Page::said(t.reported_frozen)
            },
            Reported::ChangeCancelled => Page::said(t.reported_change_new),
            Reported::SignUpCancelled => Page::said(t.reported_sign_up),
        };
        self.render(StatusCode::OK, locale, page)
    }

    pub fn resent(&self, flow: &FlowView) -> Response {
        let t = texts(flow.locale);
        let page = Page {
            details: vec![fill(t.it_went_to, &flow.masked_recipient)],
            ..Page::said(t.resent)
        };
        self.render(StatusCode::OK, flow.locale, page)
    }

    /// A button's POST that the browser says another site sent: refused, nothing done.
    pub fn cross_site(&self, locale: Locale) -> Response {
        self.render(
            StatusCode::FORBIDDEN,
            locale,
            Page::said(texts(locale).cross_site),
        )
    }

    /// `GET /verify` without a token, `GET /cancel`, `GET /resend`: what the browser shows
    /// when a result page is reopened, or a link was cut short.
    pub fn open_from_mail(&self, locale: Locale) -> Response {
        self.render(
            StatusCode::OK,
            locale,
            Page::said(texts(locale).open_from_mail),
        )
    }

    pub fn no_such_page(&self, locale: Locale) -> Response {
        self.render(
            StatusCode::NOT_FOUND,
            locale,
            Page::said(texts(locale).no_such_page),
        )
    }

    pub fn wrong_method(&self, locale: Locale) -> Response {
        self.render(
            StatusCode::METHOD_NOT_ALLOWED,
            locale,
            Page::said(texts(locale).wrong_method),
        )
    }

    /// The page and status for an error, for a visit with `link`.
    pub fn error(&self, e: &CoreError, link: Link<'_>) -> Response {
        if !e.reason().is_empty() {
            crate::metrics::refused(e.reason());
        }
        let status = http_status(e);
        let locale = link.locale;
        let t: &Texts = texts(locale);
        let page = match e {
            CoreError::TokenExpired | CoreError::TokenSuperseded if link.pending => Page {
                title: if matches!(e, CoreError::TokenExpired) {
                    t.expired
                } else {
                    t.superseded
                },
                message: t.renewable.to_owned(),
                resend: true,
                report: true,
                token: link.token,
                ..Page::default()
            },
            CoreError::TokenExpired | CoreError::TokenSuperseded | CoreError::NoPendingFlow => {
                Page::said(t.finished)
            }
            CoreError::TokenUsed if link.pending => Page {
                details: vec![t.used_pending.to_owned()],
                report: true,
                token: link.token,
                ..Page::said(t.used)
            },
            CoreError::TokenUsed => Page::said(t.used),
            CoreError::TokenNotFound => Page::said(t.unknown_link),
            CoreError::InvalidToken
            | CoreError::InvalidCode
            | CoreError::InvalidPageToken
            | CoreError::InvalidEmail { .. }
            | CoreError::InvalidUserId(_) => Page::said(t.invalid_link),
            CoreError::EmailTaken => Page::said(t.taken),
            CoreError::ResendCooldown { .. }
            | CoreError::RateLimited { .. }
            | CoreError::LockedOut { .. } => {
                let secs = e.retry_after().map(|d| d.as_secs().max(1)).unwrap_or(60);
                // Past two minutes, whole minutes (rounded up) read better.
                let shown = if secs > 120 {
                    secs.div_ceil(60) * 60
                } else {
                    secs
                };
                let at = crate::clock::duration_ms(std::time::Duration::from_secs(secs));
                let why = match e {
                    CoreError::ResendCooldown { .. } => t.wait_cooldown,
                    CoreError::RateLimited { .. } => t.wait_limited,
                    _ => t.wait_locked,
                };
                let when = t
                    .wait_when
                    .replacen("{}", &duration_in_words(shown, locale), 1)
                    .replacen("{}", &self.when(link.now + at, locale), 1);
                let page = Page {
                    title: t.wait_title,
                    message: why.to_owned(),
                    details: vec![when],
                    ..Page::default()
                };
                let mut resp = self.render(status, locale, page);
                resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
                return resp;
            }
            CoreError::AddressUndeliverable { .. } => Page::said(t.undeliverable),
            CoreError::EmailAlreadyVerified
            | CoreError::UseChangeFlow
            | CoreError::SameEmail
            | CoreError::ChangeFrozen { .. }
            | CoreError::CodeMismatch { .. }
            | CoreError::UserNotFound
            | CoreError::NotSuppressed
            | CoreError::InvalidCursor
            | CoreError::CursorExpired
            | CoreError::TooManyWatchers { .. } => Page::said(t.cannot_complete),
            CoreError::Unavailable(_) | CoreError::Contended(_) | CoreError::Internal(_) => {
                tracing::error!(error.cause_chain = ?e, "link page failed");
                Page::said(t.broken)
            }
        };
        self.render(status, locale, page)
    }
}

/// The HTTP status of each error (API.md, link shim table).
pub fn http_status(e: &CoreError) -> StatusCode {
    match e {
        CoreError::InvalidEmail { .. }
        | CoreError::InvalidUserId(_)
        | CoreError::InvalidToken
        | CoreError::InvalidCode
        | CoreError::InvalidPageToken
        | CoreError::InvalidCursor => StatusCode::BAD_REQUEST,
        CoreError::TokenNotFound | CoreError::UserNotFound | CoreError::NotSuppressed => {
            StatusCode::NOT_FOUND
        }
        CoreError::TokenUsed
        | CoreError::AddressUndeliverable { .. }
        | CoreError::EmailTaken
        | CoreError::EmailAlreadyVerified
        | CoreError::UseChangeFlow
        | CoreError::SameEmail
        | CoreError::ChangeFrozen { .. }
        | CoreError::CodeMismatch { .. }
        | CoreError::CursorExpired => StatusCode::CONFLICT,
        CoreError::TokenExpired | CoreError::TokenSuperseded | CoreError::NoPendingFlow => {
            StatusCode::GONE
        }
        CoreError::ResendCooldown { .. }
        | CoreError::RateLimited { .. }
        | CoreError::LockedOut { .. }
        | CoreError::TooManyWatchers { .. } => StatusCode::TOO_MANY_REQUESTS,
        CoreError::Unavailable(_) | CoreError::Contended(_) => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
