use sea_orm::entity::prelude::*;

use crate::domain::{FlowKind, FlowState, FlowStep};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "flows")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub flow_id: String,
    pub user_id: String,
    pub kind: FlowKind,
    /// The step whose link is current (DONE once the flow completed).
    pub step: FlowStep,
    pub state: FlowState,
    pub new_email: String,
    pub old_email: Option<String>,
    pub locale: String,
    pub expires_at: i64,
    pub resend_available_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Wrong codes so far (reset when a lock ends).
    pub failed_codes: i32,
    pub locked_until: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
