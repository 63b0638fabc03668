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
    /// What the support console adds to the events it causes: `support:<name>: <reason>`.
    static NOTE: String;
}

/// Runs `f` with `ctx` as the current request context.
pub async fn scope<F: Future>(ctx: RequestContext, f: F) -> F::Output {
    CONTEXT.scope(ctx, f).await
}

/// Runs `f` with `ctx`, and `note` appended to the detail of every event it writes (the
/// support console: who acted and why, so ListEvents and the feed show it).
pub async fn scope_noted<F: Future>(ctx: RequestContext, note: String, f: F) -> F::Output {
    CONTEXT.scope(ctx, NOTE.scope(note, f)).await
}

/// `detail` with the current note, if any, after it.
pub fn noted(detail: &str) -> String {
    let note = NOTE.try_with(Clone::clone).unwrap_or_default();
    match (detail.is_empty(), note.is_empty()) {
        (_, true) => detail.to_owned(),
        (true, false) => note,
        (false, false) => format!("{detail}; {note}"),
    }
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
