//! RequestVerification: sign-up / add email. Records the address for the user,
//! unverified, and mails a one-time link (and code) to it.

use crate::domain::{EmailAddress, FlowKind, Locale, UserId};
use crate::error::{CoreError, CoreResult};
use crate::store::Tx;
use crate::store::entity::user;

use super::flows::FlowRequest;
use super::request::Wanted;
use super::{Core, FlowView};

impl Core {
    #[tracing::instrument(skip_all, fields(user_id = %user, to = %email.masked()))]
    pub async fn request_verification(
        &self,
        user: &UserId,
        email: &EmailAddress,
        locale: Option<Locale>,
    ) -> CoreResult<FlowView> {
        self.request(user, email, locale, Wanted::Verification)
            .await
    }

    /// RequestVerification's rules for the locked user `row`, inside the caller's
    /// transaction (RequestChange without a verified address comes here too).
    pub(super) async fn verify_in(
        &self,
        tx: &Tx,
        row: &user::Model,
        email: &EmailAddress,
        locale: Option<Locale>,
        now: i64,
    ) -> CoreResult<FlowView> {
        // Order (API.md): the user's own address first, then EMAIL_TAKEN (in start_flow).
        if row.email_verified {
            return Err(if row.email.as_deref() == Some(email.as_str()) {
                CoreError::EmailAlreadyVerified
            } else {
                CoreError::UseChangeFlow
            });
        }
        let user = UserId::from_trusted(row.user_id.clone());
        let request = FlowRequest {
            user: &user,
            kind: FlowKind::Verify,
            new_email: email,
            old_email: None,
            locale,
        };
        self.start_flow(tx, request, now).await
    }
}
