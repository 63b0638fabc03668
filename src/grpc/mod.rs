//! The gRPC front door: generated code, the service adapter, conversions, the status
//! mapping, caller authentication and what one connection may take (`conn`). No rules
//! here: everything is the core's.

pub mod conn;
pub mod convert;
pub mod service;
pub mod status;
mod watch;

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// Generated protobuf and tonic code, kept private; `pb` re-exports what others use.
mod generated {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("emailverify.v1");
}

pub mod pb {
    pub use super::generated::email_verification_client::EmailVerificationClient;
    pub use super::generated::email_verification_server::{
        EmailVerification, EmailVerificationServer,
    };
    pub use super::generated::*;

    /// The encoded descriptors of our proto (for server reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/emailverify_descriptor.bin"));
}

/// Who called, as the interceptor established it (for the audit trail).
#[derive(Debug, Clone)]
pub struct Caller(pub String);

/// Checks `authorization: Bearer <token>` against the configured tokens, in constant
/// time per candidate. With no tokens configured every call passes (loopback default).
/// A refusal is counted in `emailverify_auth_failures_total` and logged at WARN (why and
/// from where, never what was presented) — at most once every [`AUTH_WARN_EVERY`], with
/// the count of refusals since, so a caller hammering a wrong token cannot flood the logs.
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<Vec<String>>,
    warned: Arc<std::sync::Mutex<AuthWarnings>>,
}

/// How often a run of failed caller authentications is logged at WARN, at most.
pub const AUTH_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// When the last WARN went out, and the refusals since that it did not name.
#[derive(Default)]
struct AuthWarnings {
    at: Option<std::time::Instant>,
    unreported: u64,
}

impl AuthWarnings {
    /// Counts one refusal; `Some(n)`: log now, for these `n` refusals.
    fn refused(&mut self) -> Option<u64> {
        self.unreported += 1;
        let now = std::time::Instant::now();
        if self.at.is_some_and(|at| now < at + AUTH_WARN_EVERY) {
            return None;
        }
        self.at = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

impl BearerAuth {
    pub fn new(tokens: Vec<String>) -> Self {
        Self {
            tokens: Arc::new(tokens),
            warned: Arc::default(),
        }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if self.tokens.is_empty() {
            request.extensions_mut().insert(Caller("api".into()));
            return Ok(request);
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare against every token without stopping early.
        let ok = self.tokens.iter().fold(0u8, |acc, t| {
            acc | u8::from(bool::from(t.as_bytes().ct_eq(presented.as_bytes())))
        });
        if ok == 1 {
            return Ok(request);
        }
        let reason = if presented.is_empty() {
            "missing"
        } else {
            "wrong"
        };
        crate::metrics::auth_failure(reason);
        let Some(failures) = self.warned.lock().map_or(None, |mut w| w.refused()) else {
            return Err(Status::unauthenticated("missing or wrong bearer token"));
        };
        let peer = conn::ConnInfo::of(request.extensions())
            .and_then(conn::ConnInfo::peer)
            .map(|p| p.to_string())
            .unwrap_or_default();
        let request_id = crate::core::context::request_id(
            request
                .metadata()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
        );
        tracing::warn!(
            reason,
            peer = %peer,
            request_id = %request_id,
            failures,
            "gRPC caller authentication failed: {reason} bearer token ({failures} refused since the last such warning, which is logged at most every 10 s)"
        );
        Err(Status::unauthenticated("missing or wrong bearer token"))
    }
}
