//! `CoreError` → `tonic::Status`, once, exhaustively: the contract's code, a message, and
//! `google.rpc.ErrorInfo` (domain `emailverify`) plus `BadRequest` for malformed input and
//! `RetryInfo` for RESOURCE_EXHAUSTED. Internal errors are logged here, with their cause
//! chain, and the caller gets a generic message.

use std::collections::HashMap;

use tonic_types::{ErrorDetails, StatusExt};

use crate::core::error::{CoreError, DOMAIN, ErrorClass};

pub fn to_status(err: CoreError) -> tonic::Status {
    let code = err.class().grpc_code();
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
