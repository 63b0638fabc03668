//! `CoreError` → `tonic::Status`, once, exhaustively: the contract's code, a message, and
//! `google.rpc.ErrorInfo` (domain `emailverify`) plus `BadRequest` for malformed input and
//! `RetryInfo` for RESOURCE_EXHAUSTED. Internal errors are logged here, with their cause
//! chain, and the caller gets a generic message.

use std::collections::HashMap;

use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{CoreError, DOMAIN, ErrorClass};

/// The gRPC code of each class of error.
pub fn grpc_code(class: ErrorClass) -> tonic::Code {
    match class {
        ErrorClass::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorClass::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorClass::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorClass::NotFound => tonic::Code::NotFound,
        ErrorClass::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorClass::Unavailable => tonic::Code::Unavailable,
        ErrorClass::Internal => tonic::Code::Internal,
    }
}

pub fn to_status(err: CoreError) -> tonic::Status {
    let code = grpc_code(err.class());
    match err.class() {
        ErrorClass::Internal | ErrorClass::Unavailable => {
            tracing::error!(error.cause_chain = ?err, "request failed");
            let message = if err.class() == ErrorClass::Unavailable {
                "the database is unavailable; retry"
            } else {
                "internal error"
            };
            return tonic::Status::new(code, message);
        }
        ErrorClass::InvalidArgument
        | ErrorClass::AlreadyExists
        | ErrorClass::FailedPrecondition
        | ErrorClass::NotFound
        | ErrorClass::ResourceExhausted => {}
    }
    let metadata: HashMap<String, String> = err
        .metadata()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let mut details = ErrorDetails::with_error_info(err.reason(), DOMAIN, metadata);
    if let Some(field) = err.field() {
        details.add_bad_request_violation(field, err.to_string());
    }
    if let Some(retry) = err.retry_after() {
        details.set_retry_info(Some(retry));
    }
    tonic::Status::with_error_details(code, err.to_string(), details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tonic::Code;

    /// Pins every variant to its code and reason: the contract's error table, as data.
    #[test]
    fn every_variant_has_the_contracts_code_and_reason() {
        let d = Duration::from_secs(1);
        let table: Vec<(CoreError, Code, &str)> = vec![
            (
                CoreError::InvalidEmail {
                    field: "email",
                    message: String::new(),
                },
                Code::InvalidArgument,
                "INVALID_EMAIL",
            ),
            (
                CoreError::InvalidUserId(String::new()),
                Code::InvalidArgument,
                "INVALID_USER_ID",
            ),
            (
                CoreError::InvalidToken,
                Code::InvalidArgument,
                "INVALID_TOKEN",
            ),
            (CoreError::EmailTaken, Code::AlreadyExists, "EMAIL_TAKEN"),
            (
                CoreError::EmailAlreadyVerified,
                Code::FailedPrecondition,
                "EMAIL_ALREADY_VERIFIED",
            ),
            (
                CoreError::UseChangeFlow,
                Code::FailedPrecondition,
                "USE_CHANGE_FLOW",
            ),
            (CoreError::SameEmail, Code::FailedPrecondition, "SAME_EMAIL"),
            (
                CoreError::NoPendingFlow,
                Code::FailedPrecondition,
                "NO_PENDING_FLOW",
            ),
            (
                CoreError::ChangeFrozen { until: 0 },
                Code::FailedPrecondition,
                "CHANGE_FROZEN",
            ),
            (
                CoreError::CodeMismatch { attempts_left: 1 },
                Code::FailedPrecondition,
                "CODE_MISMATCH",
            ),
            (
                CoreError::TokenExpired,
                Code::FailedPrecondition,
                "TOKEN_EXPIRED",
            ),
            (CoreError::TokenUsed, Code::FailedPrecondition, "TOKEN_USED"),
            (
                CoreError::TokenSuperseded,
                Code::FailedPrecondition,
                "TOKEN_SUPERSEDED",
            ),
            (CoreError::TokenNotFound, Code::NotFound, "TOKEN_NOT_FOUND"),
            (CoreError::UserNotFound, Code::NotFound, "USER_NOT_FOUND"),
            (
                CoreError::AddressUndeliverable {
                    cause: "bounced",
                    until: Some(0),
                },
                Code::FailedPrecondition,
                "ADDRESS_UNDELIVERABLE",
            ),
            (CoreError::NotSuppressed, Code::NotFound, "NOT_SUPPRESSED"),
            (
                CoreError::ResendCooldown { retry_after: d },
                Code::ResourceExhausted,
                "RESEND_COOLDOWN",
            ),
            (
                CoreError::RateLimited { retry_after: d },
                Code::ResourceExhausted,
                "RATE_LIMITED",
            ),
            (
                CoreError::LockedOut { retry_after: d },
                Code::ResourceExhausted,
                "LOCKED_OUT",
            ),
            (
                CoreError::TooManyWatchers { retry_after: d },
                Code::ResourceExhausted,
                "TOO_MANY_WATCHERS",
            ),
            (
                CoreError::Unavailable(anyhow::anyhow!("x")),
                Code::Unavailable,
                "",
            ),
            (
                CoreError::Internal(anyhow::anyhow!("x")),
                Code::Internal,
                "",
            ),
        ];
        for (err, code, reason) in table {
            assert_eq!(grpc_code(err.class()), code, "{err:?}");
            assert_eq!(err.reason(), reason, "{err:?}");
            assert_eq!(
                err.retry_after().is_some(),
                code == Code::ResourceExhausted,
                "{err:?}"
            );
            assert_eq!(
                err.field().is_some(),
                code == Code::InvalidArgument,
                "{err:?}"
            );
        }
    }

    /// ADDRESS_UNDELIVERABLE names its cause, and `until` only for a bounce.
    #[test]
    fn address_undeliverable_carries_cause_and_until_for_bounces_only() {
        let bounced = CoreError::AddressUndeliverable {
            cause: "bounced",
            until: Some(1_700_000_000_000),
        };
        let m: HashMap<_, _> = bounced.metadata().into_iter().collect();
        assert_eq!(m["cause"], "bounced");
        assert!(m["until"].starts_with("2023-11-14T22:13:20"), "{m:?}");
        let complained = CoreError::AddressUndeliverable {
            cause: "complained",
            until: None,
        };
        let m: HashMap<_, _> = complained.metadata().into_iter().collect();
        assert_eq!(m["cause"], "complained");
        assert!(!m.contains_key("until"));
    }
}
