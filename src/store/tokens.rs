//! The `tokens` table: one row per link sent, keyed by the token's keyed digest (never
//! the token), with the digest of the code mailed beside it.

use sea_orm::sea_query::{Expr, UpdateStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, JoinType, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, RelationDef, Statement,
};

use super::Tx;
use super::entity::{flow, token};
use crate::domain::{FlowId, FlowStep, TokenDigest, TokenState};
use crate::error::CoreResult;

pub struct NewToken<'a> {
    pub digest: &'a TokenDigest,
    pub flow_id: &'a FlowId,
    pub step: FlowStep,
    pub expires_at: i64,
    pub code_digest: &'a str,
    pub now: i64,
}

impl Tx {
    /// Every live token of the flow stops working.
    pub async fn supersede_tokens(&self, flow_id: &FlowId) -> CoreResult<()> {
        self.locked_only()?;
        token::Entity::update_many()
            .col_expr(token::Column::State, Expr::value(TokenState::Superseded))
            .filter(token::Column::FlowId.eq(flow_id.as_str()))
            .filter(token::Column::State.eq(TokenState::Live))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }

    /// A fresh row, so it may wait for the next statement (see `batch.rs`).
    pub async fn insert_token(&self, t: NewToken<'_>) -> CoreResult<()> {
        let row = token::Model {
            digest: t.digest.0.clone(),
            flow_id: t.flow_id.as_str().to_owned(),
            step: t.step,
            state: TokenState::Live,
            expires_at: t.expires_at,
            created_at: t.now,
            used_at: None,
            code_digest: Some(t.code_digest.to_owned()),
        };
        if self.wait(|rows| rows.new_token(&row)) {
            return Ok(());
        }
        let insert = token::Entity::insert(token::ActiveModel::from(row)).build(self.backend());
        self.conn().await?.execute_raw(insert).await?;
        Ok(())
    }

    /// The token stored under any of the candidate digests (one per configured key), with
    /// its flow: one read.
    pub async fn token_with_flow(
        &self,
        candidates: &[TokenDigest],
    ) -> CoreResult<Option<(token::Model, flow::Model)>> {
        let to_flow: RelationDef = token::Entity::belongs_to(flow::Entity)
            .from(token::Column::FlowId)
            .to(flow::Column::FlowId)
            .into();
        let select = token::Entity::find()
            .filter(token::Column::Digest.is_in(candidates.iter().map(|d| d.0.as_str())))
            .join(JoinType::InnerJoin, to_flow)
            .select_also(flow::Entity);
        if self.is_optimistic() {
            return self
                .token_with_flow_and_user(select.build(DbBackend::Postgres))
                .await;
        }
        let found = select.one(self.conn().await?).await?;
        Ok(found.and_then(|(t, f)| Some((t, f?))))
    }

    /// Optimistic `token_with_flow`: the same read, with the flow's user and its version
    /// beside it (kept in the plan for `lock_user_consuming`): still one round trip.
    async fn token_with_flow_and_user(
        &self,
        select: Statement,
    ) -> CoreResult<Option<(token::Model, flow::Model)>> {
        let sql = format!(
            "SELECT q.*, {} FROM ({}) q LEFT JOIN users u ON u.user_id = q.\"B_user_id\"",
            super::entity::user::user_columns_beside(),
            select.sql
        );
        let read = Statement { sql, ..select };
        let Some(row) = self.conn().await?.query_one_raw(read).await? else {
            return Ok(None);
        };
        let tok = token::Model::from_query_result(&row, "A_")?;
        let f = flow::Model::from_query_result(&row, "B_")?;
        if let Some(read) = super::entity::user::user_beside(&row)? {
            self.plan().expect("optimistic").read_user = Some(read);
        }
        Ok(Some((tok, f)))
    }

    /// Consumes a live, unexpired token: one conditional update, so of any number of
    /// concurrent confirmations exactly one sees `true`.
    pub async fn consume_token(&self, digest: &TokenDigest, now: i64) -> CoreResult<bool> {
        self.locked_only()?;
        let consume = self.backend().build(&consume_update(&digest.0, now));
        let res = self.conn().await?.execute_raw(consume).await?;
        Ok(res.rows_affected() == 1)
    }

    /// The newest live token of a flow's step (the one a code is checked against).
    pub async fn live_token(
        &self,
        flow_id: &FlowId,
        step: FlowStep,
    ) -> CoreResult<Option<token::Model>> {
        Ok(token::Entity::find()
            .filter(token::Column::FlowId.eq(flow_id.as_str()))
            .filter(token::Column::Step.eq(step))
            .filter(token::Column::State.eq(TokenState::Live))
            .order_by_desc(token::Column::CreatedAt)
            .one(self.conn().await?)
            .await?)
    }
}

/// Marks a live, unexpired token used.
pub(super) fn consume_update(digest: &str, now: i64) -> UpdateStatement {
    token::Entity::update_many()
        .col_expr(token::Column::State, Expr::value(TokenState::Used))
        .col_expr(token::Column::UsedAt, Expr::value(now))
        .filter(token::Column::Digest.eq(digest))
        .filter(token::Column::State.eq(TokenState::Live))
        .filter(token::Column::ExpiresAt.gt(now))
        .into_query()
}
