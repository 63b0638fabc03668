//! The `EmailVerification` service: decode → core → encode. No rules live here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use super::pb;
use super::status::to_status;
use crate::core::Core;
use crate::domain::Locale;

pub struct GrpcService {
    core: Arc<Core>,
}

impl GrpcService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::EmailVerification for GrpcService {
    async fn request_verification(
        &self,
        req: Request<pb::RequestVerificationRequest>,
    ) -> Reply<pb::RequestVerificationResponse> {
        let r = req.into_inner();
        let user = convert::user_id(&r.user_id).map_err(to_status)?;
        let email = convert::email("email", &r.email).map_err(to_status)?;
        let flow = self
            .core
            .request_verification(&user, &email, Locale::from_tag(&r.locale))
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RequestVerificationResponse {
            flow: Some(flow.into()),
        }))
    }

    async fn request_change(
        &self,
        req: Request<pb::RequestChangeRequest>,
    ) -> Reply<pb::RequestChangeResponse> {
        let r = req.into_inner();
        let user = convert::user_id(&r.user_id).map_err(to_status)?;
        let email = convert::email("new_email", &r.new_email).map_err(to_status)?;
        let flow = self
            .core
            .request_change(&user, &email, Locale::from_tag(&r.locale))
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::RequestChangeResponse {
            flow: Some(flow.into()),
        }))
    }

    async fn confirm_link(
        &self,
        req: Request<pb::ConfirmLinkRequest>,
    ) -> Reply<pb::ConfirmLinkResponse> {
        let token = convert::token(&req.into_inner().token).map_err(to_status)?;
        let confirmation = self.core.confirm_link(&token).await.map_err(to_status)?;
        Ok(Response::new(confirmation.into()))
    }

    async fn resend(&self, req: Request<pb::ResendRequest>) -> Reply<pb::ResendResponse> {
        let user = convert::user_id(&req.into_inner().user_id).map_err(to_status)?;
        let flow = self.core.resend(&user).await.map_err(to_status)?;
        Ok(Response::new(pb::ResendResponse {
            flow: Some(flow.into()),
        }))
    }

    async fn get_status(&self, req: Request<pb::GetStatusRequest>) -> Reply<pb::GetStatusResponse> {
        let user = convert::user_id(&req.into_inner().user_id).map_err(to_status)?;
        let status = self.core.status(&user).await.map_err(to_status)?;
        Ok(Response::new(status.into()))
    }

    async fn cancel_change(
        &self,
        req: Request<pb::CancelChangeRequest>,
    ) -> Reply<pb::CancelChangeResponse> {
        let user = convert::user_id(&req.into_inner().user_id).map_err(to_status)?;
        self.core.cancel(&user).await.map_err(to_status)?;
        Ok(Response::new(pb::CancelChangeResponse {}))
    }

    async fn confirm_code(
        &self,
        _req: Request<pb::ConfirmCodeRequest>,
    ) -> Reply<pb::ConfirmLinkResponse> {
        // One-time codes are the subject of the abuse-resistance work (issue #3); until
        // they exist, say so plainly rather than pretend.
        Err(Status::unimplemented("ConfirmCode is not available yet"))
    }

    async fn list_events(
        &self,
        _req: Request<pb::ListEventsRequest>,
    ) -> Reply<pb::ListEventsResponse> {
        Err(Status::unimplemented("ListEvents is not available yet"))
    }
}
