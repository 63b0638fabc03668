//! The `EmailVerification` service: decode → core → encode. No rules live here. Each call
//! runs inside its audit context (who called, which request).

use std::future::Future;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use super::status::to_status;
use super::{Caller, convert, pb};
use crate::core::context::{self, RequestContext};
use crate::core::{Core, CoreError};
use crate::domain::Locale;
use crate::domain::token::is_code;

pub struct GrpcService {
    core: Arc<Core>,
    /// WatchEvents: the process's watchers and the poller they share (they end when the
    /// service stops).
    watchers: Arc<super::watch::Watchers>,
}

impl GrpcService {
    /// The service; its WatchEvents watchers (and their poller) end when `stop` is cancelled.
    pub fn new(
        core: Arc<Core>,
        stop: tokio_util::sync::CancellationToken,
        feed: &crate::settings::FeedLimits,
    ) -> Self {
        let watchers =
            super::watch::Watchers::start(core.clone(), feed.max_watchers, feed.watcher_idle, stop);
        Self { core, watchers }
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// The audit context of a call: the caller the interceptor recognised (and, with mutual
/// TLS, a fingerprint of its certificate) and the request id.
fn context_of<T>(req: &Request<T>) -> RequestContext {
    let mut actor = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .unwrap_or_else(|| "api".into());
    if let Some(cert) = super::conn::peer_certs(req.extensions())
        .as_ref()
        .and_then(|certs| certs.first().cloned())
    {
        let fp: String = Sha256::digest(cert.as_ref())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        actor = format!("{actor} mtls:{fp}");
    }
    let request_id = context::request_id(
        req.metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
    );
    RequestContext { actor, request_id }
}

/// Runs `handle` on the request's message inside the request's audit context.
async fn serve<T, R, F>(
    method: &'static str,
    req: Request<T>,
    handle: impl FnOnce(T) -> F,
) -> Reply<R>
where
    F: Future<Output = Result<R, CoreError>>,
{
    let started = std::time::Instant::now();
    let ctx = context_of(&req);
    // Every log line of the call carries its request id.
    let span = tracing::info_span!("rpc", method, request_id = %ctx.request_id);
    let call = async move {
        let result = context::scope(ctx, handle(req.into_inner())).await;
        if let Err(e) = &result
            && !e.reason().is_empty()
        {
            crate::metrics::refused(e.reason());
        }
        let result = result.map(Response::new).map_err(to_status);
        let code = result
            .as_ref()
            .map(|_| tonic::Code::Ok)
            .unwrap_or_else(|s| s.code());
        let elapsed = started.elapsed();
        crate::metrics::rpc(method, code, elapsed);
        // The access log line: method, outcome, latency; never the request's fields.
        tracing::info!(code = ?code, elapsed_ms = elapsed.as_millis() as u64, "rpc done");
        result
    };
    tracing::Instrument::instrument(call, span).await
}

#[tonic::async_trait]
impl pb::EmailVerification for GrpcService {
    type WatchEventsStream = super::watch::WatchStream;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Reply<Self::WatchEventsStream> {
        super::watch::watch(self.watchers.clone(), req).await
    }

    async fn request_verification(
        &self,
        req: Request<pb::RequestVerificationRequest>,
    ) -> Reply<pb::RequestVerificationResponse> {
        serve("RequestVerification", req, |r| async move {
            let user = convert::user_id(&r.user_id)?;
            let email = convert::email("email", &r.email)?;
            let flow = self
                .core
                .request_verification(&user, &email, Locale::requested(&r.locale))
                .await?;
            Ok(pb::RequestVerificationResponse {
                flow: Some(flow.into()),
            })
        })
        .await
    }

    async fn request_change(
        &self,
        req: Request<pb::RequestChangeRequest>,
    ) -> Reply<pb::RequestChangeResponse> {
        serve("RequestChange", req, |r| async move {
            let user = convert::user_id(&r.user_id)?;
            let email = convert::email("new_email", &r.new_email)?;
            let flow = self
                .core
                .request_change(&user, &email, Locale::requested(&r.locale))
                .await?;
            Ok(pb::RequestChangeResponse {
                flow: Some(flow.into()),
            })
        })
        .await
    }

    async fn confirm_link(
        &self,
        req: Request<pb::ConfirmLinkRequest>,
    ) -> Reply<pb::ConfirmLinkResponse> {
        serve("ConfirmLink", req, |r| async move {
            let token = convert::token(&r.token)?;
            Ok(self.core.confirm_link(&token).await?.into())
        })
        .await
    }

    async fn resend(&self, req: Request<pb::ResendRequest>) -> Reply<pb::ResendResponse> {
        serve("Resend", req, |r| async move {
            let user = convert::user_id(&r.user_id)?;
            let flow = self.core.resend(&user).await?;
            Ok(pb::ResendResponse {
                flow: Some(flow.into()),
            })
        })
        .await
    }

    async fn get_status(&self, req: Request<pb::GetStatusRequest>) -> Reply<pb::GetStatusResponse> {
        serve("GetStatus", req, |r| async move {
            let user = convert::user_id(&r.user_id)?;
            Ok(self.core.status(&user).await?.into())
        })
        .await
    }

    async fn cancel_change(
        &self,
        req: Request<pb::CancelChangeRequest>,
    ) -> Reply<pb::CancelChangeResponse> {
        serve("CancelChange", req, |r| async move {
            let user = convert::user_id(&r.user_id)?;
            self.core.cancel(&user).await?;
            Ok(pb::CancelChangeResponse {})
        })
        .await
    }

    async fn confirm_code(
        &self,
        req: Request<pb::ConfirmCodeRequest>,
    ) -> Reply<pb::ConfirmLinkResponse> {
        serve("ConfirmCode", req, |r| async move {
            let user = convert::user_id(&r.user_id)?;
            if !is_code(&r.code) {
                return Err(CoreError::InvalidCode);
            }
            Ok(self.core.confirm_code(&user, &r.code).await?.into())
        })
        .await
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Reply<pb::ListEventsResponse> {
        serve("ListEvents", req, |r| async move {
            let user = convert::user_id(&r.user_id)?;
            let (events, next_page_token) = self
                .core
                .list_events(&user, r.page_size, &r.page_token)
                .await?;
            Ok(pb::ListEventsResponse {
                events: events.into_iter().map(Into::into).collect(),
                next_page_token,
            })
        })
        .await
    }

    async fn lift_suppression(
        &self,
        req: Request<pb::LiftSuppressionRequest>,
    ) -> Reply<pb::LiftSuppressionResponse> {
        serve("LiftSuppression", req, |r| async move {
            let email = convert::email("email", &r.email)?;
            self.core.lift_suppression(&email).await?;
            Ok(pb::LiftSuppressionResponse {})
        })
        .await
    }

    async fn erase_user(&self, req: Request<pb::EraseUserRequest>) -> Reply<pb::EraseUserResponse> {
        serve("EraseUser", req, |r| async move {
            let user = convert::user_id(&r.user_id)?;
            self.core.erase_user(&user).await?;
            Ok(pb::EraseUserResponse {})
        })
        .await
    }
}
