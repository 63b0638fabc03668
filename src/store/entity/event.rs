use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub event_id: i64,
    pub user_id: String,
    pub flow_id: Option<String>,
    /// Written only from `domain::EventType`; read back as text, so a replica never
    /// fails to list an event type that a newer replica added.
    pub event_type: String,
    pub masked_address: String,
    pub detail: String,
    pub at: i64,
    /// Who caused it: `api` (a gRPC caller; `api mtls:<certificate fingerprint>` under
    /// mutual TLS), `link-page`, `mail-worker`, or empty for `emailverify outbox retry-dead`.
    pub actor: String,
    pub request_id: String,
    /// How many times this refusal happened within its minute (1 for every other event).
    pub repeats: i32,
    /// The feed position's first part: the writing transaction on PostgreSQL (set by the
    /// database), 0 on SQLite (see the feed migration).
    pub feed_tx: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
