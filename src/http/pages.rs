//! The link pages: plain, accessible HTML that reads well on a phone, in the flow's
//! language (`texts.rs`), or the browser's when the flow chose none. One layout
//! (minijinja, auto-escaped); the inline stylesheet is allowed by a CSP hash, so the
//! policy can forbid every other source. `CoreError` → page and status, exhaustively
//! (`errors.rs`). A page offers only buttons that can work: a finished flow's old link
//! offers none, and says what became of its request and when (`errors.rs`).

mod errors;
pub mod texts;

pub use errors::http_status;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use jiff::tz::TimeZone;
use minijinja::{Environment, context};
use sha2::{Digest, Sha256};

use crate::core::{Confirmation, FlowView, LinkFlow, Report, Reported};
use crate::domain::when::for_people;
use crate::domain::{FlowKind, FlowStep, Locale, Outcome, Token};
use texts::{Said, texts};

/// Contrast (WCAG 2.2 AA), light: text #1f2328 and muted #57606a on white 15.8:1 and
/// 6.1:1; white on the blue button 6.6:1; the red outline button 6.5:1; the focus ring
/// (#1f2328 around the control, 2 px off it) 15.8:1 against the white card. Dark
/// (`prefers-color-scheme: dark`): text #e6edf3 and muted #9198a1 on the card #161b22
/// 14.6:1 and 5.9:1; #0d1117 on the blue button #8ab4f8 9.0:1; the red outline button
/// #ffa198 8.9:1; the focus ring #e6edf3 14.6:1. Long words (masked addresses) wrap
/// anywhere, so nothing runs past the card at 200 % text size.
///
/// The Devanagari face is declared for Devanagari code points only (`unicode-range`):
/// Latin letters, digits and punctuation keep the Latin faces before it, on every page.
const CSS: &str = "@font-face{font-family:Deva;src:local('Noto Sans Devanagari'),local('NotoSansDevanagari-Regular'),local('Mangal'),local('Kohinoor Devanagari');unicode-range:U+0900-097F,U+1CD0-1CFF,U+A8E0-A8FF}:root{color-scheme:light dark}body{margin:0;background:#f4f5f7;color:#1f2328;font:16px/1.5 -apple-system,'Segoe UI',Roboto,Deva,sans-serif}main{max-width:30rem;margin:0 auto;padding:1.5rem}h1{font-size:1.4rem;margin:.5rem 0 1rem}h1,p{overflow-wrap:anywhere}.card{background:#fff;border-radius:.5rem;padding:1.5rem}form{margin:1rem 0 0}button{width:100%;min-height:3rem;font:inherit;font-size:1rem;border-radius:.4rem;border:0;background:#0b57d0;color:#fff;cursor:pointer;padding:.5rem 1rem}button.secondary{background:#fff;color:#b3261e;border:1px solid #b3261e}button:focus-visible,a:focus-visible{outline:3px solid #1f2328;outline-offset:2px}.muted{color:#57606a;font-size:.9rem}@media (prefers-color-scheme:dark){body{background:#0d1117;color:#e6edf3}.card{background:#161b22}button{background:#8ab4f8;color:#0d1117}button.secondary{background:#161b22;color:#ffa198;border-color:#ffa198}button:focus-visible,a:focus-visible{outline-color:#e6edf3}.muted{color:#9198a1}}";

const LAYOUT: &str = r#"<!doctype html>
<html lang="{{ lang }}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark"><meta name="robots" content="noindex"><meta name="referrer" content="same-origin"><title>{{ title }}</title><style>{{ css|safe }}</style></head>
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
    /// How people reach support (`EMAILVERIFY_SUPPORT_CONTACT`; empty: Help in the app).
    support: String,
}

/// What a page knows of the link it was reached with: the token, the page's language
/// (the flow's, or the browser's when the flow chose none), and the link's flow — where
/// it stands now (only a pending flow can get a new link or hear "this wasn't me").
#[derive(Clone)]
pub struct Link<'a> {
    pub token: Option<&'a Token>,
    pub locale: Locale,
    pub flow: Option<LinkFlow>,
    /// The service's clock, for "try again at".
    pub now: i64,
}

impl Link<'_> {
    /// No token (or none we know): the page speaks `locale` and offers no button.
    pub fn none(locale: Locale, now: i64) -> Self {
        Link {
            token: None,
            locale,
            flow: None,
            now,
        }
    }

    fn pending(&self) -> bool {
        self.flow.as_ref().is_some_and(|f| f.pending)
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

/// Named places (`{when}`) in a sentence, filled.
fn fill_named(sentence: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(sentence.to_owned(), |s, (name, value)| {
        s.replace(&format!("{{{name}}}"), value)
    })
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
            support: String::new(),
        }
    }

    /// Pages that tell people to reach support name `contact` (else Help in the app).
    pub fn with_support(mut self, contact: &str) -> Self {
        self.support = contact.trim().to_owned();
        self
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

    /// How to reach support, in `locale`.
    fn help(&self, locale: Locale) -> String {
        let t = texts(locale);
        if self.support.is_empty() {
            t.help_app.to_owned()
        } else {
            fill_named(t.help_support, &[("support", &self.support)])
        }
    }

    /// The page of a live link: Confirm, and "This wasn't me" beside it. A change's first
    /// link also names the (masked) address it changes to: `changes_to`.
    pub fn confirm(
        &self,
        flow: &FlowView,
        locale: Locale,
        token: &Token,
        changes_to: Option<&str>,
    ) -> Response {
        let t = texts(locale);
        let (said, button) = match (flow.kind, flow.step) {
            (FlowKind::Change, FlowStep::ConfirmCurrent) => {
                (t.change_current, t.change_current_button)
            }
            (FlowKind::Change, _) => (t.change_new, t.change_new_button),
            (FlowKind::Verify, _) => (t.verify, t.verify_button),
        };
        let mut details: Vec<String> = changes_to
            .map(|to| fill(t.changes_to, to))
            .into_iter()
            .collect();
        details.push(fill(t.sent_to, &flow.masked_recipient));
        let page = Page {
            details,
            confirm: button,
            report: true,
            token: Some(token),
            ..Page::said(said)
        };
        self.render(StatusCode::OK, locale, page)
    }

    pub fn confirmed(&self, c: &Confirmation, locale: Locale) -> Response {
        let t = texts(locale);
        let page = match c.outcome {
            Outcome::EmailVerified => Page::said(t.verified),
            Outcome::CurrentConfirmed => Page {
                details: vec![fill(t.link_went_to, &c.flow.masked_recipient)],
                ..Page::said(t.current_confirmed)
            },
            Outcome::EmailChanged => Page::said(t.changed),
        };
        self.render(StatusCode::OK, locale, page)
    }

    /// What "This wasn't me" did: from the current address, the change is stopped and
    /// changes are frozen (until when, and why); from the new address, only cancelled; a
    /// sign-up's address is taken off the account.
    pub fn reported(&self, r: &Report, locale: Locale) -> Response {
        let t = texts(locale);
        let page = match r.what {
            Reported::ChangeFrozen { until } => Page {
                message: fill(t.reported_frozen.1, &self.when(until, locale)),
                details: vec![t.reported_frozen_why.to_owned()],
                ..Page::said(t.reported_frozen)
            },
            Reported::ChangeCancelled => Page::said(t.reported_change_new),
            Reported::SignUpCancelled => Page {
                details: vec![t.reported_sign_up_again.to_owned()],
                ..Page::said(t.reported_sign_up)
            },
        };
        self.render(StatusCode::OK, locale, page)
    }

    pub fn resent(&self, flow: &FlowView, locale: Locale) -> Response {
        let t = texts(locale);
        let page = Page {
            details: vec![fill(t.it_went_to, &flow.masked_recipient)],
            ..Page::said(t.resent)
        };
        self.render(StatusCode::OK, locale, page)
    }

    /// A button's POST that the browser says another site sent: refused, nothing done.
    pub fn cross_site(&self, locale: Locale) -> Response {
        self.simple(StatusCode::FORBIDDEN, locale, texts(locale).cross_site)
    }

    /// `GET /verify` without a token, `GET /cancel`, `GET /resend`: what the browser shows
    /// when a result page is reopened, or a link was cut short.
    pub fn open_from_mail(&self, locale: Locale) -> Response {
        self.simple(StatusCode::OK, locale, texts(locale).open_from_mail)
    }

    pub fn no_such_page(&self, locale: Locale) -> Response {
        self.simple(StatusCode::NOT_FOUND, locale, texts(locale).no_such_page)
    }

    pub fn wrong_method(&self, locale: Locale) -> Response {
        self.simple(
            StatusCode::METHOD_NOT_ALLOWED,
            locale,
            texts(locale).wrong_method,
        )
    }

    /// A button's POST whose body is not the page's form: 415 (not a form), 413 (too
    /// large) or 400; nothing done.
    pub fn unreadable_form(&self, status: StatusCode, locale: Locale) -> Response {
        self.simple(status, locale, texts(locale).unreadable_form)
    }

    fn simple(&self, status: StatusCode, locale: Locale, said: Said) -> Response {
        self.render(status, locale, Page::said(said))
    }
}
