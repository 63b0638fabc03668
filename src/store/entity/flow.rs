use sea_orm::entity::prelude::*;

use crate::domain::{FlowId, FlowKind, FlowState, FlowStep, UserId};

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

impl Model {
    /// The flow's id, as the store's API takes it.
    pub fn id(&self) -> FlowId {
        FlowId::from_trusted(self.flow_id.clone())
    }

    /// The flow's user, as the store's API takes it.
    pub fn user(&self) -> UserId {
        UserId::from_trusted(self.user_id.clone())
    }
}
