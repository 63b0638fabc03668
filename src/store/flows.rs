//! The `flows` table: a user's sign-up or change, its current step and link times.
//! A user has at most one `pending` flow.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryTrait,
};

use super::entity::flow;
use super::{Store, Tx, raw};
use crate::domain::FlowState;
use crate::error::{CoreError, CoreResult};

impl Store {
    pub async fn pending_flow(&self, user_id: &str) -> CoreResult<Option<flow::Model>> {
        pending_flow(&self.db, user_id).await
    }
}

impl Tx {
    pub async fn pending_flow(&self, user_id: &str) -> CoreResult<Option<flow::Model>> {
        pending_flow(self.conn().await?, user_id).await
    }

    /// Locks the user's row and reads their pending flow, in one round trip. `None` both
    /// for an unknown user and for one with nothing pending: the same statement, in the
    /// same time, either way.
    pub async fn lock_user_pending_flow(&self, user_id: &str) -> CoreResult<Option<flow::Model>> {
        let backend = self.backend();
        let lock = match backend {
            DbBackend::Postgres => "FOR UPDATE OF u",
            // One writer at a time: the transaction's first write takes the lock.
            _ => "",
        };
        let sql = format!(
            "SELECT f.* FROM users u LEFT JOIN flows f ON f.user_id = u.user_id AND f.state = $2 \
             WHERE u.user_id = $1 {lock}"
        );
        let values = [user_id.into(), FlowState::Pending.as_str().into()];
        let row = self
            .conn()
            .await?
            .query_one_raw(raw(backend, &sql, values))
            .await?;
        let Some(row) = row else { return Ok(None) };
        let flow_id: Option<String> = row.try_get("", "flow_id")?;
        match flow_id {
            Some(_) => Ok(Some(flow::Model::from_query_result(&row, "")?)),
            None => Ok(None),
        }
    }

    /// What a new request must know, in one round trip: who has an address of `email`'s
    /// inbox verified (the same key; if anyone) and the user's pending flow (if any).
    pub async fn owner_and_pending(
        &self,
        user_id: &str,
        email: &str,
    ) -> CoreResult<(Option<String>, Option<flow::Model>)> {
        let row = self
            .conn()
            .await?
            .query_one_raw(raw(
                self.backend(),
                "SELECT (SELECT user_id FROM users WHERE email_key = $1 AND email_verified LIMIT 1) \
                   AS verified_owner, f.* \
                 FROM (SELECT 1 AS one) AS one \
                 LEFT JOIN flows f ON f.user_id = $2 AND f.state = $3",
                [
                    super::users::key_of(email).into(),
                    user_id.into(),
                    FlowState::Pending.as_str().into(),
                ],
            ))
            .await?
            .ok_or_else(|| CoreError::Internal(anyhow::anyhow!("a one-row select was empty")))?;
        let owner: Option<String> = row.try_get("", "verified_owner")?;
        let flow_id: Option<String> = row.try_get("", "flow_id")?;
        let pending = match flow_id {
            Some(_) => Some(flow::Model::from_query_result(&row, "")?),
            None => None,
        };
        Ok((owner, pending))
    }

    pub async fn flow(&self, flow_id: &str) -> CoreResult<Option<flow::Model>> {
        Ok(flow::Entity::find_by_id(flow_id.to_owned())
            .one(self.conn().await?)
            .await?)
    }

    /// A new flow: a fresh row, so it may wait for the next statement (see `batch.rs`).
    pub async fn insert_flow(&self, f: flow::Model) -> CoreResult<()> {
        let insert = flow::Entity::insert(flow::ActiveModel::from(f)).build(self.backend());
        self.queue(insert).await
    }

    /// Moves a flow to a new step/state and records its current link's times.
    pub async fn update_flow(&self, f: &flow::Model) -> CoreResult<()> {
        flow::Entity::update_many()
            .col_expr(flow::Column::Step, Expr::value(f.step))
            .col_expr(flow::Column::State, Expr::value(f.state))
            .col_expr(flow::Column::ExpiresAt, Expr::value(f.expires_at))
            .col_expr(
                flow::Column::ResendAvailableAt,
                Expr::value(f.resend_available_at),
            )
            .col_expr(flow::Column::UpdatedAt, Expr::value(f.updated_at))
            .col_expr(flow::Column::FailedCodes, Expr::value(f.failed_codes))
            .col_expr(flow::Column::LockedUntil, Expr::value(f.locked_until))
            .filter(flow::Column::FlowId.eq(f.flow_id.clone()))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }
}

async fn pending_flow<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
) -> CoreResult<Option<flow::Model>> {
    Ok(flow::Entity::find()
        .filter(flow::Column::UserId.eq(user_id))
        .filter(flow::Column::State.eq(FlowState::Pending))
        .one(db)
        .await?)
}
