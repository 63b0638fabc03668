use sea_orm::entity::prelude::*;

use crate::domain::{FlowStep, TokenState};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tokens")]
pub struct Model {
    /// HMAC-SHA-256 of the token, lower-case hex. Never the token itself.
    #[sea_orm(primary_key, auto_increment = false)]
    pub digest: String,
    pub flow_id: String,
    pub step: FlowStep,
    pub state: TokenState,
    pub expires_at: i64,
    pub created_at: i64,
    pub used_at: Option<i64>,
    /// HMAC of the 6-digit code mailed with this link.
    pub code_digest: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
