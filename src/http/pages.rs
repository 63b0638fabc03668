//! The link pages: plain, accessible HTML that reads well on a phone. One layout
//! (minijinja, auto-escaped); the inline stylesheet is allowed by a CSP hash, so the
//! policy can forbid every other source. `CoreError` → page and status, exhaustively.

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use minijinja::{Environment, context};
use sha2::{Digest, Sha256};

use crate::core::{Confirmation, CoreError, FlowView};
use crate::domain::{FlowKind, FlowStep, Outcome, Token};

const CSS: &str = "body{margin:0;background:#f4f5f7;color:#1f2328;font:16px/1.5 -apple-system,'Segoe UI',Roboto,'Noto Sans Devanagari',sans-serif}main{max-width:30rem;margin:0 auto;padding:1.5rem}h1{font-size:1.4rem;margin:.5rem 0 1rem}.card{background:#fff;border-radius:.5rem;padding:1.5rem}form{margin:1rem 0 0}button{width:100%;min-height:3rem;font-size:1rem;border-radius:.4rem;border:0;background:#0b57d0;color:#fff;cursor:pointer}button.secondary{background:#fff;color:#b3261e;border:1px solid #b3261e}button:focus{outline:3px solid #f9ab00;outline-offset:2px}.muted{color:#57606a;font-size:.9rem}";

const LAYOUT: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="robots" content="noindex"><title>{{ title }}</title><style>{{ css|safe }}</style></head>
<body><main><div class="card">
<h1>{{ title }}</h1>
<p>{{ message }}</p>
{% if detail %}<p class="muted">{{ detail }}</p>{% endif %}
{% if confirm %}<form method="post" action="/verify"><input type="hidden" name="token" value="{{ token }}"><button type="submit">{{ confirm }}</button></form>{% endif %}
{% if resend %}<form method="post" action="/resend"><input type="hidden" name="token" value="{{ token }}"><button type="submit">Send me a new link</button></form>{% endif %}
{% if report %}<form method="post" action="/cancel"><input type="hidden" name="token" value="{{ token }}"><button class="secondary" type="submit">This wasn't me</button></form>{% endif %}
</div></main></body>
</html>"#;

pub struct Pages {
    env: Environment<'static>,
    css_hash: String,
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

/// What one page shows.
#[derive(Default)]
struct Page<'a> {
    title: &'a str,
    message: &'a str,
    detail: String,
    confirm: &'a str,
    resend: bool,
    report: bool,
    token: Option<&'a Token>,
}

impl Pages {
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.add_template("page.html", LAYOUT)
            .expect("the page layout parses");
        let css_hash =
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(CSS.as_bytes()));
        Self { env, css_hash }
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

    fn render(&self, status: StatusCode, p: Page<'_>) -> Response {
        let body = self.env.get_template("page.html").and_then(|t| {
            t.render(context! {
                css => CSS,
                title => p.title,
                message => p.message,
                detail => p.detail,
                confirm => p.confirm,
                resend => p.resend,
                report => p.report,
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

    /// The page of a live link: Confirm, and "This wasn't me" beside it.
    pub fn confirm(&self, flow: &FlowView, token: &Token) -> Response {
        let (title, message, button) = match (flow.kind, flow.step) {
            (FlowKind::Change, FlowStep::ConfirmCurrent) => (
                "Confirm the change of your email address",
                "A change of your wallet's email address was requested. Confirm it here; a second link will then go to the new address.",
                "Confirm the change",
            ),
            (FlowKind::Change, _) => (
                "Confirm your new email address",
                "Confirm this address as the new email address of your wallet account.",
                "Confirm new address",
            ),
            (FlowKind::Verify, _) => (
                "Confirm your email address",
                "Confirm that this is the email address of your wallet account.",
                "Confirm",
            ),
        };
        self.render(
            StatusCode::OK,
            Page {
                title,
                message,
                detail: format!("This was sent to {}.", flow.masked_recipient),
                confirm: button,
                report: true,
                token: Some(token),
                ..Page::default()
            },
        )
    }

    pub fn confirmed(&self, c: &Confirmation) -> Response {
        let (title, message) = match c.outcome {
            Outcome::EmailVerified => (
                "Email address confirmed",
                "Thank you: your email address is verified. You can return to the app.",
            ),
            Outcome::CurrentConfirmed => (
                "Now check your new inbox",
                "Thank you. We sent a link to your new address: open it to finish the change.",
            ),
            Outcome::EmailChanged => (
                "Email address changed",
                "Your wallet's email address is changed. You can return to the app.",
            ),
        };
        let detail = match c.outcome {
            Outcome::CurrentConfirmed => format!("The link went to {}.", c.flow.masked_recipient),
            Outcome::EmailVerified | Outcome::EmailChanged => String::new(),
        };
        self.render(
            StatusCode::OK,
            Page {
                title,
                message,
                detail,
                ..Page::default()
            },
        )
    }

    pub fn cancelled(&self) -> Response {
        self.render(
            StatusCode::OK,
            Page {
                title: "Request cancelled",
                message: "Thank you for telling us. The request was cancelled and its links no longer work. Nothing was changed.",
                ..Page::default()
            },
        )
    }

    pub fn resent(&self, flow: &FlowView) -> Response {
        self.render(
            StatusCode::OK,
            Page {
                title: "A new link is on its way",
                message: "We sent a new link. Earlier links no longer work.",
                detail: format!("It went to {}.", flow.masked_recipient),
                ..Page::default()
            },
        )
    }

    /// A button's POST that the browser says another site sent: refused, nothing done.
    pub fn cross_site(&self) -> Response {
        self.render(
            StatusCode::FORBIDDEN,
            Page {
                title: "Please use the link in your email",
                message: "This request came from another website, so we did not act on it. Nothing was changed. To confirm or cancel, open the link in the email we sent you.",
                ..Page::default()
            },
        )
    }

    /// The flow of this link was cancelled, replaced or finished.
    pub fn flow_gone(&self) -> Response {
        self.render(
            StatusCode::GONE,
            Page {
                title: "This request is no longer active",
                message: "It was cancelled, completed or replaced by a newer request. If you still need a link, ask for one in the app.",
                ..Page::default()
            },
        )
    }

    /// The page and status for an error; `token` lets expired links offer a new one.
    pub fn error(&self, e: &CoreError, token: Option<&Token>) -> Response {
        if !e.reason().is_empty() {
            crate::metrics::refused(e.reason());
        }
        let status = http_status(e);
        let page = match e {
            CoreError::TokenExpired | CoreError::TokenSuperseded => Page {
                title: if matches!(e, CoreError::TokenExpired) {
                    "This link has expired"
                } else {
                    "This link was replaced"
                },
                message: "For your safety, links work only for a short time and only the newest one works. You can get a new link below.",
                resend: token.is_some(),
                report: token.is_some(),
                token,
                ..Page::default()
            },
            CoreError::TokenUsed => Page {
                title: "Already confirmed",
                message: "This link was already used. Nothing more to do here.",
                ..Page::default()
            },
            CoreError::TokenNotFound => Page {
                title: "Link not found",
                message: "We do not know this link. Please use the newest link we sent you.",
                ..Page::default()
            },
            CoreError::InvalidToken
            | CoreError::InvalidCode
            | CoreError::InvalidPageToken
            | CoreError::InvalidEmail { .. }
            | CoreError::InvalidUserId(_) => Page {
                title: "This link is not valid",
                message: "The link seems incomplete. Copy the whole link from the email, or use the button in it.",
                ..Page::default()
            },
            CoreError::EmailTaken => Page {
                title: "Address already in use",
                message: "This email address is already verified for another account, so it cannot be used here.",
                ..Page::default()
            },
            CoreError::NoPendingFlow => {
                return self.flow_gone();
            }
            CoreError::ResendCooldown { .. }
            | CoreError::RateLimited { .. }
            | CoreError::LockedOut { .. } => {
                let secs = e.retry_after().map(|d| d.as_secs().max(1)).unwrap_or(60);
                let mut resp = self.render(
                    status,
                    Page {
                        title: "Please wait a moment",
                        message: "Too many attempts in a short time.",
                        detail: format!("Try again in {secs} seconds."),
                        ..Page::default()
                    },
                );
                resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
                return resp;
            }
            CoreError::AddressUndeliverable { .. } => Page {
                title: "We cannot send mail to this address",
                message: "Mail to this address was refused or reported, so we send it nothing more. Please use another address in the app, or contact support.",
                ..Page::default()
            },
            CoreError::EmailAlreadyVerified
            | CoreError::UseChangeFlow
            | CoreError::SameEmail
            | CoreError::ChangeFrozen { .. }
            | CoreError::CodeMismatch { .. }
            | CoreError::UserNotFound
            | CoreError::NotSuppressed => Page {
                title: "This request cannot be completed",
                message: "Please start again from the app.",
                ..Page::default()
            },
            CoreError::Unavailable(_) | CoreError::Internal(_) => {
                tracing::error!(error.cause_chain = ?e, "link page failed");
                Page {
                    title: "Something went wrong",
                    message: "We could not complete this right now. Please try again in a few minutes.",
                    ..Page::default()
                }
            }
        };
        self.render(status, page)
    }
}

/// The HTTP status of each error (API.md, link shim table).
pub fn http_status(e: &CoreError) -> StatusCode {
    match e {
        CoreError::InvalidEmail { .. }
        | CoreError::InvalidUserId(_)
        | CoreError::InvalidToken
        | CoreError::InvalidCode
        | CoreError::InvalidPageToken => StatusCode::BAD_REQUEST,
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
        | CoreError::CodeMismatch { .. } => StatusCode::CONFLICT,
        CoreError::TokenExpired | CoreError::TokenSuperseded | CoreError::NoPendingFlow => {
            StatusCode::GONE
        }
        CoreError::ResendCooldown { .. }
        | CoreError::RateLimited { .. }
        | CoreError::LockedOut { .. } => StatusCode::TOO_MANY_REQUESTS,
        CoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        CoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
