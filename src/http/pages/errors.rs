//! The page and status of each refusal, exhaustively; and what a link whose request has
//! ended says (API.md, release 3): what became of the address and when, and how to reach
//! support — the truth for that link now, whatever page the browser had kept (the back
//! button restores a Confirm page whose buttons then land here).

use axum::http::{StatusCode, header};
use axum::response::Response;

use super::texts::{Texts, texts};
use super::{Link, Page, Pages, fill_named};
use crate::core::{CoreError, LinkFlow};
use crate::domain::when::duration_in_words;
use crate::domain::{FlowKind, FlowState, Locale};

impl Pages {
    /// The page and status for an error, for a visit with `link`.
    pub fn error(&self, e: &CoreError, link: Link<'_>) -> Response {
        if !e.reason().is_empty() {
            crate::metrics::refused(e.reason());
        }
        let status = http_status(e);
        let locale = link.locale;
        let t: &Texts = texts(locale);
        let page = match e {
            CoreError::TokenExpired | CoreError::TokenSuperseded if link.pending() => Page {
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
            CoreError::TokenUsed if link.pending() => {
                let f = link.flow.as_ref();
                let when = f.and_then(|f| f.used_at).unwrap_or(link.now);
                let new = f.map(|f| f.masked_new.as_str()).unwrap_or_default();
                Page {
                    message: fill_named(
                        t.used_pending.1,
                        &[("when", &self.when(when, locale)), ("new", new)],
                    ),
                    details: vec![t.used_pending_stop.to_owned()],
                    report: true,
                    token: link.token,
                    ..Page::said(t.used_pending)
                }
            }
            CoreError::TokenUsed
            | CoreError::TokenExpired
            | CoreError::TokenSuperseded
            | CoreError::NoPendingFlow => match &link.flow {
                Some(f) => self.ended(f, locale),
                None => Page::said(t.finished),
            },
            CoreError::TokenNotFound => Page::said(t.unknown_link),
            CoreError::InvalidToken
            | CoreError::InvalidCode
            | CoreError::InvalidPageToken
            | CoreError::InvalidEmail { .. }
            | CoreError::InvalidUserId(_) => Page::said(t.invalid_link),
            CoreError::EmailTaken => Page::said(t.taken),
            CoreError::ResendCooldown { .. }
            | CoreError::RateLimited { .. }
            | CoreError::LockedOut { .. } => return self.wait(e, &link),
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

    /// A link whose flow is no longer pending: what became of the request, when, and how
    /// to reach support. No button: none could work.
    fn ended(&self, f: &LinkFlow, locale: Locale) -> Page<'static> {
        let t = texts(locale);
        let said = match (f.state, f.flow.kind) {
            (FlowState::Completed, FlowKind::Verify) => t.done_verified,
            (FlowState::Completed, FlowKind::Change) => t.done_changed,
            (FlowState::Superseded, FlowKind::Verify) => t.done_replaced_verify,
            (FlowState::Superseded, FlowKind::Change) => t.done_replaced_change,
            (_, FlowKind::Verify) => t.done_cancelled_verify,
            (_, FlowKind::Change) => t.done_cancelled_change,
        };
        let when = self.when(f.updated_at, locale);
        Page {
            message: fill_named(
                said.1,
                &[
                    ("when", &when),
                    ("old", &f.masked_old),
                    ("new", &f.masked_new),
                ],
            ),
            details: vec![self.help(locale)],
            ..Page::said(said)
        }
    }

    /// 429: why, how long (in words: seconds up to a minute, then whole minutes, rounded
    /// up) and until when; with Retry-After.
    fn wait(&self, e: &CoreError, link: &Link<'_>) -> Response {
        let locale = link.locale;
        let t = texts(locale);
        let secs = e.retry_after().map(|d| d.as_secs().max(1)).unwrap_or(60);
        let shown = shown_wait(secs);
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
        let mut resp = self.render(http_status(e), locale, page);
        resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
        resp
    }
}

/// A wait as people say it: seconds up to a minute, whole minutes (rounded up) past it
/// — "2 minutes", never "104 seconds".
fn shown_wait(secs: u64) -> u64 {
    if secs > 60 {
        secs.div_ceil(60) * 60
    } else {
        secs
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_past_a_minute_are_whole_minutes() {
        assert_eq!(shown_wait(1), 1);
        assert_eq!(shown_wait(60), 60);
        assert_eq!(shown_wait(61), 120);
        assert_eq!(shown_wait(104), 120);
        assert_eq!(duration_in_words(shown_wait(104), Locale::En), "2 minutes");
        assert_eq!(shown_wait(3599), 3600);
    }
}
