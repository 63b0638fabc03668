//! `CoreError`: THE error type of the service. One variant per reason of the contract's
//! error table (API.md), plus `Unavailable` and `Internal`. It sits below the store and the
//! core (both return it) and knows neither: the store classifies database errors into it
//! (`store::error`), and each front door maps it once, exhaustively: `grpc::status` to a
//! gRPC status with rich details, `http::pages` to a page and code.

use std::time::Duration;

/// The ErrorInfo domain of every error we return.
pub const DOMAIN: &str = "emailverify";

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{field}: {message}")]
    InvalidEmail {
        field: &'static str,
        message: String,
    },
    #[error("user_id: {0}")]
    InvalidUserId(String),
    #[error("token: a token is exactly 43 characters of unpadded base64url")]
    InvalidToken,
    #[error("code: a code is exactly 6 digits")]
    InvalidCode,
    #[error("page_token: not a page token from ListEvents")]
    InvalidPageToken,
    #[error("after: not a cursor from WatchEvents")]
    InvalidCursor,
    #[error("the cursor is older than the retained events: resynchronise with GetStatus")]
    CursorExpired,
    #[error("the address is verified by another account")]
    EmailTaken,
    #[error("this address is already verified for this user")]
    EmailAlreadyVerified,
    #[error("the user has a different verified address: use RequestChange")]
    UseChangeFlow,
    #[error("the new address is the current address")]
    SameEmail,
    #[error("nothing is pending for this user")]
    NoPendingFlow,
    #[error("address changes are frozen after a reported change")]
    ChangeFrozen { until: i64 },
    #[error("the code does not match")]
    CodeMismatch { attempts_left: u32 },
    #[error("the link has expired")]
    TokenExpired,
    #[error("the link has already been used")]
    TokenUsed,
    #[error("the link was replaced by a newer one")]
    TokenSuperseded,
    #[error("the link is not known")]
    TokenNotFound,
    #[error("the user is not known")]
    UserNotFound,
    #[error("a new link can be sent in {}s", retry_after.as_secs())]
    ResendCooldown { retry_after: Duration },
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    #[error("too many failed attempts")]
    LockedOut { retry_after: Duration },
    #[error("mail to this address cannot be delivered ({cause})")]
    AddressUndeliverable {
        /// `bounced` or `complained`.
        cause: &'static str,
        /// When a bounce's suppression ends (Unix ms); `None` for a complaint.
        until: Option<i64>,
    },
    #[error("the address is not suppressed")]
    NotSuppressed,
    #[error("too many watchers of the change feed on this server; try again later")]
    TooManyWatchers { retry_after: Duration },
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// A retry signal, not an answer: see `Contended`.
    #[error(transparent)]
    Contended(Contended),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Why an optimistic use-case gave up: what it read changed before it could write (or it
/// needs a lock). It never reaches a caller: the core runs the use-case again, and its
/// last try is a locked one, which cannot meet this (`Store::attempts`).
#[derive(Debug, thiserror::Error)]
#[error("a concurrent change, or a step that needs a lock; the use-case runs again")]
pub struct Contended {
    /// The use-case needs the locks (trying again optimistically cannot help).
    pub needs_lock: bool,
}

impl CoreError {
    /// RATE_LIMITED by the limit `label` (counted in the metrics): try again after
    /// `retry_after`.
    pub fn rate_limited(retry_after: Duration, label: &'static str) -> Self {
        crate::metrics::rate_limited(label);
        CoreError::RateLimited { retry_after }
    }

    /// Answers that a limit's refusal must not hide (API.md, release 3, "Precedence"):
    /// RATE_LIMITED itself, and a suppressed inbox, which waiting would not help.
    pub fn outranks_limits(&self) -> bool {
        matches!(
            self,
            CoreError::RateLimited { .. } | CoreError::AddressUndeliverable { .. }
        )
    }

    /// See `Contended`: what it read changed.
    pub fn contended() -> Self {
        CoreError::Contended(Contended { needs_lock: false })
    }

    /// See `Contended`: a step that only a locked use-case can take.
    pub fn needs_lock() -> Self {
        CoreError::Contended(Contended { needs_lock: true })
    }

    /// Whether this is `Contended`, and if so whether it needs the locks.
    pub fn contended_needs_lock(&self) -> Option<bool> {
        match self {
            CoreError::Contended(c) => Some(c.needs_lock),
            _ => None,
        }
    }
}

/// The coarse kind of an error: it decides the gRPC code and the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidArgument,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Internal,
}

impl CoreError {
    /// The contract's `reason` (ErrorInfo); empty for the generic errors.
    pub fn reason(&self) -> &'static str {
        match self {
            CoreError::InvalidEmail { .. } => "INVALID_EMAIL",
            CoreError::InvalidUserId(_) => "INVALID_USER_ID",
            CoreError::InvalidToken => "INVALID_TOKEN",
            CoreError::InvalidCode => "INVALID_CODE",
            CoreError::InvalidPageToken => "INVALID_PAGE_TOKEN",
            CoreError::InvalidCursor => "INVALID_CURSOR",
            CoreError::CursorExpired => "CURSOR_EXPIRED",
            CoreError::EmailTaken => "EMAIL_TAKEN",
            CoreError::EmailAlreadyVerified => "EMAIL_ALREADY_VERIFIED",
            CoreError::UseChangeFlow => "USE_CHANGE_FLOW",
            CoreError::SameEmail => "SAME_EMAIL",
            CoreError::NoPendingFlow => "NO_PENDING_FLOW",
            CoreError::ChangeFrozen { .. } => "CHANGE_FROZEN",
            CoreError::CodeMismatch { .. } => "CODE_MISMATCH",
            CoreError::TokenExpired => "TOKEN_EXPIRED",
            CoreError::TokenUsed => "TOKEN_USED",
            CoreError::TokenSuperseded => "TOKEN_SUPERSEDED",
            CoreError::TokenNotFound => "TOKEN_NOT_FOUND",
            CoreError::UserNotFound => "USER_NOT_FOUND",
            CoreError::ResendCooldown { .. } => "RESEND_COOLDOWN",
            CoreError::RateLimited { .. } => "RATE_LIMITED",
            CoreError::LockedOut { .. } => "LOCKED_OUT",
            CoreError::AddressUndeliverable { .. } => "ADDRESS_UNDELIVERABLE",
            CoreError::NotSuppressed => "NOT_SUPPRESSED",
            CoreError::TooManyWatchers { .. } => "TOO_MANY_WATCHERS",
            CoreError::Unavailable(_) | CoreError::Contended(_) => "",
            CoreError::Internal(_) => "",
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            CoreError::InvalidEmail { .. }
            | CoreError::InvalidUserId(_)
            | CoreError::InvalidToken
            | CoreError::InvalidCode
            | CoreError::InvalidPageToken
            | CoreError::InvalidCursor => ErrorClass::InvalidArgument,
            CoreError::EmailTaken => ErrorClass::AlreadyExists,
            CoreError::EmailAlreadyVerified
            | CoreError::UseChangeFlow
            | CoreError::SameEmail
            | CoreError::NoPendingFlow
            | CoreError::ChangeFrozen { .. }
            | CoreError::CodeMismatch { .. }
            | CoreError::TokenExpired
            | CoreError::TokenUsed
            | CoreError::TokenSuperseded
            | CoreError::AddressUndeliverable { .. }
            | CoreError::CursorExpired => ErrorClass::FailedPrecondition,
            CoreError::TokenNotFound | CoreError::UserNotFound | CoreError::NotSuppressed => {
                ErrorClass::NotFound
            }
            CoreError::ResendCooldown { .. }
            | CoreError::RateLimited { .. }
            | CoreError::LockedOut { .. }
            | CoreError::TooManyWatchers { .. } => ErrorClass::ResourceExhausted,
            // Contended never escapes the core's attempts; if it did, trying again is right.
            CoreError::Unavailable(_) | CoreError::Contended(_) => ErrorClass::Unavailable,
            CoreError::Internal(_) => ErrorClass::Internal,
        }
    }

    /// The field a malformed input came in (for `google.rpc.BadRequest`).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            CoreError::InvalidEmail { field, .. } => Some(field),
            CoreError::InvalidUserId(_) => Some("user_id"),
            CoreError::InvalidToken => Some("token"),
            CoreError::InvalidCode => Some("code"),
            CoreError::InvalidPageToken => Some("page_token"),
            CoreError::InvalidCursor => Some("after"),
            _ => None,
        }
    }

    /// When a RESOURCE_EXHAUSTED error may be retried (RetryInfo / Retry-After).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CoreError::ResendCooldown { retry_after }
            | CoreError::RateLimited { retry_after }
            | CoreError::LockedOut { retry_after }
            | CoreError::TooManyWatchers { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// ErrorInfo metadata the contract names (`until`, `attempts_left`, `cause`).
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        match self {
            CoreError::ChangeFrozen { until } => {
                vec![("until", crate::clock::rfc3339(*until))]
            }
            CoreError::CodeMismatch { attempts_left } => {
                vec![("attempts_left", attempts_left.to_string())]
            }
            CoreError::AddressUndeliverable { cause, until } => {
                let mut m = vec![("cause", (*cause).to_owned())];
                if let Some(until) = until {
                    m.push(("until", crate::clock::rfc3339(*until)));
                }
                m
            }
            _ => Vec::new(),
        }
    }
}

pub type CoreResult<T> = Result<T, CoreError>;
