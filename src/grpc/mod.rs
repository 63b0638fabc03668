//! The gRPC front door: generated code, the service adapter, conversions, the status
//! mapping and caller authentication. No rules here: everything is the core's.

pub mod convert;
pub mod service;
pub mod status;

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
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<Vec<String>>,
}

impl BearerAuth {
    pub fn new(tokens: Vec<String>) -> Self {
        Self {
            tokens: Arc::new(tokens),
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
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}
