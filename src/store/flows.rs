//! The `flows` table: a user's sign-up or change, its current step and link times.
//! A user has at most one `pending` flow.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryTrait,
    Statement,
};

use std::sync::LazyLock;

use super::entity::{flow, user};
use super::reads::{RequestRead, Suppression, SuppressionCause};
use super::{Store, Tx, raw};
use crate::domain::{EmailAddress, FlowId, FlowState, UserId};
use crate::error::{CoreError, CoreResult};

impl Store {
    pub async fn pending_flow(&self, user_id: &UserId) -> CoreResult<Option<flow::Model>> {
        pending_flow(&self.db, user_id).await
    }
}

impl Tx {
    pub async fn pending_flow(&self, user_id: &UserId) -> CoreResult<Option<flow::Model>> {
        pending_flow(self.conn().await?, user_id).await
    }

    /// Locks the user's row, then reads their pending flow: the user and the flow, or
    /// `None` both for an unknown user and for one with nothing pending (the same two
    /// statements, in the same time, either way). Two statements: one statement's reads
    /// would see the snapshot taken before it waited for the lock (READ COMMITTED), so a
    /// flow changed by the use-case that held the lock would be read as it was (a wrong
    /// code counted twice as one, a finished flow taken for pending).
    pub async fn lock_user_pending_flow(
        &self,
        user_id: &UserId,
    ) -> CoreResult<Option<(user::Model, flow::Model)>> {
        let user = self.lock_user(user_id).await?;
        let pending = self.pending_flow(user_id).await?;
        Ok(user.zip(pending))
    }

    /// What a new request must know, in one round trip: who has an address of `email`'s
    /// inbox verified (the same key; if anyone), the user's pending flow (if any), and a
    /// suppression in force (if any) for `email`'s inbox or `also_mailed`'s (a change's
    /// first link goes to the current address).
    pub async fn request_read(
        &self,
        user_id: &UserId,
        email: &EmailAddress,
        also_mailed: Option<&EmailAddress>,
        now: i64,
    ) -> CoreResult<RequestRead> {
        let read_ahead = self
            .plan()
            .and_then(|mut p| p.read_ahead(email.as_str(), also_mailed.map(EmailAddress::as_str)));
        if let Some(read) = read_ahead {
            return Ok(read);
        }
        let key = email.mailbox_key().into_string();
        let other = also_mailed.map_or_else(|| key.clone(), |a| a.mailbox_key().into_string());
        static SQL: LazyLock<String> = LazyLock::new(|| request_read_sql("$5", "", ""));
        let values = [
            key.into(),
            user_id.as_str().into(),
            FlowState::Pending.as_str().into(),
            now.into(),
            other.into(),
        ];
        let row = self
            .conn()
            .await?
            .query_one_raw(raw(self.backend(), &SQL, values))
            .await?
            .ok_or_else(|| CoreError::Internal(anyhow::anyhow!("a one-row select was empty")))?;
        request_read_of(&row)
    }

    /// Optimistic: the user's row and its version (if any) and `request_read` for `email`,
    /// in ONE read. The second key suppressions are looked up for is the user's verified
    /// address, the one a change's first link goes to (`also_mailed`).
    pub(super) async fn user_and_request_read(
        &self,
        user_id: &UserId,
        email: &EmailAddress,
        now: i64,
    ) -> CoreResult<(Option<(user::Model, i64)>, RequestRead)> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            request_read_sql(
                "COALESCE(CASE WHEN u.email_verified THEN u.email_key END, $1)",
                &format!(", {}", super::entity::user::user_columns_beside()),
                "LEFT JOIN users u ON u.user_id = $2",
            )
        });
        let values = [
            email.mailbox_key().into_string().into(),
            user_id.as_str().into(),
            FlowState::Pending.as_str().into(),
            now.into(),
        ];
        let row = self
            .conn()
            .await?
            .query_one_raw(raw(DbBackend::Postgres, &SQL, values))
            .await?
            .ok_or_else(|| CoreError::Internal(anyhow::anyhow!("a one-row select was empty")))?;
        Ok((
            super::entity::user::user_beside(&row)?,
            request_read_of(&row)?,
        ))
    }

    pub async fn flow(&self, flow_id: &FlowId) -> CoreResult<Option<flow::Model>> {
        Ok(flow::Entity::find_by_id(flow_id.as_str())
            .one(self.conn().await?)
            .await?)
    }

    /// A new flow: a fresh row, so it may wait for the next statement (see `batch.rs`).
    pub async fn insert_flow(&self, f: flow::Model) -> CoreResult<()> {
        if self.wait(|rows| rows.new_flow(&f)) {
            return Ok(());
        }
        let insert = flow::Entity::insert(flow::ActiveModel::from(f)).build(self.backend());
        self.conn().await?.execute_raw(insert).await?;
        Ok(())
    }

    /// Moves a flow to a new step/state and records its current link's times. Not in an
    /// optimistic use-case: ending one pending flow and starting the next in ONE
    /// statement would trip the one-pending-flow index, its parts running in no set order.
    pub async fn update_flow(&self, f: &flow::Model) -> CoreResult<()> {
        self.locked_only()?;
        self.conn()
            .await?
            .execute_raw(flow_update(f, self.backend()))
            .await?;
        Ok(())
    }

    /// `update_flow` as a write that may wait for the next statement (see `batch.rs`): for
    /// a use-case's LAST change to its flow, under the user's lock (no other write of the
    /// transaction touches that row after it).
    pub async fn queue_flow_update(&self, f: &flow::Model) -> CoreResult<()> {
        if self.wait(|rows| rows.moved_flow(f)) {
            return Ok(());
        }
        let update = flow_update(f, self.backend());
        self.conn().await?.execute_raw(update).await?;
        Ok(())
    }
}

/// The UPDATE that writes a flow's step, state and link times.
fn flow_update(f: &flow::Model, backend: DbBackend) -> Statement {
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
        .build(backend)
}

async fn pending_flow<C: ConnectionTrait>(
    db: &C,
    user_id: &UserId,
) -> CoreResult<Option<flow::Model>> {
    Ok(flow::Entity::find()
        .filter(flow::Column::UserId.eq(user_id.as_str()))
        .filter(flow::Column::State.eq(FlowState::Pending))
        .one(db)
        .await?)
}

/// The request read: `other` is the second key suppressions are looked up for, `columns`
/// and `join` what a caller reads beside it. `$1` the address's key, `$2` the user, `$3`
/// the pending state, `$4` now.
fn request_read_sql(other: &str, columns: &str, join: &str) -> String {
    // The two suppression columns come from the same row: the same filter and order.
    let suppressed = |column: &str| {
        format!(
            "(SELECT {column} FROM suppressions \
              WHERE (\"until\" IS NULL OR \"until\" > $4) AND email_key IN ($1, {other}) \
              ORDER BY cause DESC, \"until\" DESC LIMIT 1)"
        )
    };
    format!(
        "SELECT (SELECT user_id FROM users WHERE email_key = $1 AND email_verified LIMIT 1) \
           AS verified_owner, {} AS suppressed_cause, {} AS suppressed_until, f.*{columns} \
         FROM (SELECT 1 AS one) AS one {join} \
         LEFT JOIN flows f ON f.user_id = $2 AND f.state = $3",
        suppressed("cause"),
        suppressed("\"until\""),
    )
}

/// A `RequestRead` from a row of `request_read_sql`.
fn request_read_of(row: &sea_orm::QueryResult) -> CoreResult<RequestRead> {
    let flow_id: Option<String> = row.try_get("", "flow_id")?;
    let cause: Option<String> = row.try_get("", "suppressed_cause")?;
    Ok(RequestRead {
        verified_owner: row
            .try_get::<Option<String>>("", "verified_owner")?
            .map(UserId::from_trusted),
        pending: match flow_id {
            Some(_) => Some(flow::Model::from_query_result(row, "")?),
            None => None,
        },
        suppression: match cause {
            Some(cause) => Some(Suppression {
                cause: SuppressionCause::parse(&cause),
                until: row.try_get("", "suppressed_until")?,
            }),
            None => None,
        },
    })
}
