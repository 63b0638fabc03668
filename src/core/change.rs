//! RequestChange: change a verified address in two steps — a link to the CURRENT address
//! first; when it is confirmed, a link to the NEW one (`confirm.rs`). Without a verified
//! address it is exactly RequestVerification.

use crate::domain::{EmailAddress, FlowKind, Locale, UserId};
use crate::error::{CoreError, CoreResult};

use super::flows::FlowRequest;
use super::request::Wanted;
use super::{Core, FlowView};
use crate::store::Tx;
use crate::store::entity::user;

impl Core {
    #[tracing::instrument(skip_all, fields(user_id = %user, to = %new_email.masked()))]
    pub async fn request_change(
        &self,
        user: &UserId,
        new_email: &EmailAddress,
        locale: Option<Locale>,
    ) -> CoreResult<FlowView> {
        self.request(user, new_email, locale, Wanted::Change).await
    }

    /// RequestChange's rules for the locked user `row`, inside the caller's transaction.
    pub(super) async fn change_in(
        &self,
        tx: &Tx,
        row: &user::Model,
        new_email: &EmailAddress,
        locale: Option<Locale>,
        now: i64,
    ) -> CoreResult<FlowView> {
        let current = match (&row.email, row.email_verified) {
            (Some(current), true) => current,
            _ => return self.verify_in(tx, row, new_email, locale, now).await,
        };
        if current == new_email.as_str() {
            return Err(CoreError::SameEmail);
        }
        if let Some(until) = row.change_frozen_until.filter(|until| *until > now) {
            return Err(CoreError::ChangeFrozen { until });
        }
        let user = UserId::from_trusted(row.user_id.clone());
        let request = FlowRequest {
            user: &user,
            kind: FlowKind::Change,
            new_email,
            old_email: Some(current),
            locale,
        };
        self.start_flow(tx, request, now).await
    }
}
