use sea_orm::entity::prelude::*;

use crate::domain::{MailId, MailState, Template};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// Also the mail's Message-ID, so a duplicate delivery is recognisable.
    #[sea_orm(primary_key, auto_increment = false)]
    pub mail_id: String,
    pub user_id: String,
    pub flow_id: Option<String>,
    pub template: Template,
    pub recipient: String,
    pub locale: String,
    /// Non-secret template parameters, JSON.
    pub params: String,
    /// The link, AEAD-sealed; NULL once the mail is sent or dead.
    pub sealed_link: Option<String>,
    pub state: MailState,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub claimed_until: Option<i64>,
    /// The worker holding the claim.
    pub claimed_by: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    /// What a delivery status notification said of a mail the relay had accepted (its
    /// status and text), when it said the mail failed; NULL otherwise.
    pub bounce: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl Model {
    /// The mail's id, as the store's API takes it.
    pub fn id(&self) -> MailId {
        MailId::from_trusted(self.mail_id.clone())
    }
}
