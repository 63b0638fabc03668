//! Who is asking, carried alongside a request: the front doors set it for the duration of
//! a call (a Tokio task-local), and the core stamps it on the audit events it writes. Kept
//! out of every method signature because no rule depends on it — only the audit trail.

use std::future::Future;

#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// `api` (any gRPC caller; API tokens are not told apart), `api mtls:<certificate
    /// fingerprint>` under mutual TLS, `link-page`. Empty outside a request.
    pub actor: String,
    /// The caller's `x-request-id`, or one we made up.
    pub request_id: String,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// Runs `f` with `ctx` as the current request context.
pub async fn scope<F: Future>(ctx: RequestContext, f: F) -> F::Output {
    CONTEXT.scope(ctx, f).await
}

/// The current request's context; empty outside a request (e.g. in the mail worker).
pub fn current() -> RequestContext {
    CONTEXT.try_with(Clone::clone).unwrap_or_default()
}

/// A request id that is safe to store and log: the caller's if it is short and plain,
/// else a new one.
pub fn request_id(from_caller: Option<&str>) -> String {
    match from_caller {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_owned()
        }
        _ => uuid::Uuid::now_v7().to_string(),
    }
}
