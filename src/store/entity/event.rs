use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub event_id: i64,
    pub user_id: String,
    pub flow_id: Option<String>,
    pub event_type: String,
    pub masked_address: String,
    pub detail: String,
    pub at: i64,
    /// Who caused it: `api`, `api:<token #>`, `mtls:<subject>`, `link-page`, `worker`.
    pub actor: String,
    pub request_id: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
