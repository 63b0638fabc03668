//! What became of a mail after the worker handed it over: the link mail a flow's view
//! reports on (`Flow.delivery`), and what delivery status notifications and complaint
//! reports say of a mail later (bounced, delayed, complained).

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QueryTrait};

use super::entity::outbox;
use super::outbox::outbox_event;
use super::{Store, Tx, events};
use crate::domain::{EventType, Template};
use crate::error::CoreResult;

/// The latest link mail of a flow (the current step's: every step's link and every
/// resend queue a new one; the change notice is not a link mail).
async fn link_mail<C: ConnectionTrait>(db: &C, flow_id: &str) -> CoreResult<Option<outbox::Model>> {
    Ok(outbox::Entity::find()
        .filter(outbox::Column::FlowId.eq(flow_id))
        .filter(outbox::Column::Template.ne(Template::ChangeNotice))
        .order_by_desc(outbox::Column::CreatedAt)
        .order_by_desc(outbox::Column::MailId)
        .one(db)
        .await?)
}

impl Tx {
    pub async fn link_mail(&self, flow_id: &str) -> CoreResult<Option<outbox::Model>> {
        link_mail(self.conn().await?, flow_id).await
    }
}

impl Store {
    pub async fn link_mail(&self, flow_id: &str) -> CoreResult<Option<outbox::Model>> {
        link_mail(&self.db, flow_id).await
    }

    /// A mail by its id (the tag of a bounce address, or its Message-ID's left part).
    pub async fn mail(&self, mail_id: &str) -> CoreResult<Option<outbox::Model>> {
        Ok(outbox::Entity::find_by_id(mail_id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// A delivery status notification said the mail failed after it was accepted: the
    /// mail is marked bounced (`detail`: status and text) with its event, all or none.
    pub async fn mail_bounced(
        &self,
        mail: &outbox::Model,
        detail: &str,
        now: i64,
        masked: &str,
    ) -> CoreResult<()> {
        let backend = self.db.get_database_backend();
        let update = outbox::Entity::update_many()
            .col_expr(outbox::Column::Bounce, Expr::value(detail.to_owned()))
            .filter(outbox::Column::MailId.eq(mail.mail_id.clone()));
        let mut event = outbox_event(mail, EventType::MailBounced, detail, now, masked);
        event.actor = "inbound";
        self.write_together(vec![
            update.build(backend),
            EntityTrait::insert(events::row(event)).build(backend),
        ])
        .await
    }

    /// An event about a mail only (a delay, a complaint), by the inbound listener.
    pub async fn mail_event(
        &self,
        mail: &outbox::Model,
        event_type: EventType,
        detail: &str,
        now: i64,
        masked: &str,
    ) -> CoreResult<()> {
        let mut event = outbox_event(mail, event_type, detail, now, masked);
        event.actor = "inbound";
        let backend = self.db.get_database_backend();
        self.write_together(vec![EntityTrait::insert(events::row(event)).build(backend)])
            .await
    }
}
