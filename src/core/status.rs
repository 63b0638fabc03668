//! GetStatus: a user's email state, read without a transaction.

use crate::domain::UserId;
use crate::error::{CoreError, CoreResult};

use super::{Core, Status};

impl Core {
    pub async fn status(&self, user: &UserId) -> CoreResult<Status> {
        let row = self
            .store
            .user(user)
            .await?
            .ok_or(CoreError::UserNotFound)?;
        let pending = self.store.pending_flow(user).await?;
        let mail = match &pending {
            Some(f) => self.store.link_mail(&f.id()).await?,
            None => None,
        };
        Ok(Status {
            email: row.email,
            email_verified: row.email_verified,
            verified_at: row.verified_at.filter(|_| row.email_verified),
            pending: pending
                .as_ref()
                .map(|f| self.delivered_view(f, mail.as_ref())),
        })
    }
}
