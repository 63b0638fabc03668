//! What became of a mail after the worker handed it over: the link mail a flow's view
//! reports on (`Flow.delivery`), and what delivery status notifications and complaint
//! reports say of a mail later (bounced, delayed, complained).

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QueryTrait,
    TransactionTrait,
};

use super::entity::outbox;
use super::outbox::{attempted, erased, outbox_event};
use super::reads::SuppressionCause;
use super::suppressions::suppress_statement;
use super::{Store, Tx, events, raw};
use crate::domain::{EventType, FlowId, MailId, MailState, MailboxKey, Template, UserId};
use crate::error::CoreResult;

/// The latest link mail of a flow (the current step's: every step's link and every
/// resend queue a new one; the change notice is not a link mail).
async fn link_mail<C: ConnectionTrait>(
    db: &C,
    flow_id: &FlowId,
) -> CoreResult<Option<outbox::Model>> {
    Ok(outbox::Entity::find()
        .filter(outbox::Column::FlowId.eq(flow_id.as_str()))
        .filter(outbox::Column::Template.ne(Template::ChangeNotice))
        .order_by_desc(outbox::Column::CreatedAt)
        .order_by_desc(outbox::Column::MailId)
        .one(db)
        .await?)
}

impl Tx {
    pub async fn link_mail(&self, flow_id: &FlowId) -> CoreResult<Option<outbox::Model>> {
        link_mail(self.conn().await?, flow_id).await
    }
}

impl Store {
    pub async fn link_mail(&self, flow_id: &FlowId) -> CoreResult<Option<outbox::Model>> {
        link_mail(&self.db, flow_id).await
    }

    /// A mail by its id (the tag of a bounce address, or its Message-ID's left part).
    pub async fn mail(&self, mail_id: &MailId) -> CoreResult<Option<outbox::Model>> {
        Ok(outbox::Entity::find_by_id(mail_id.as_str())
            .one(&self.db)
            .await?)
    }

    /// What a report said of a mail, recorded at most once per kind: the `event_type`
    /// event (`mail_bounced`, `mail_delayed`, `mail_complained`) by the inbound listener,
    /// for `mail_bounced` the mail's bounce detail too, and `suppress` (an inbox key, the
    /// cause and its end) if given, all or none. `false`, writing nothing, when the mail
    /// already has that event (a repeat) or its user is gone. Under the user's lock (the
    /// one every use-case of the user takes), so racing reports of one mail, on any
    /// replica, write one event. The event's `request_id` names the mail
    /// (`mail:<id>`; no API answer shows it): that is how a repeat is known.
    #[allow(clippy::too_many_arguments)]
    pub async fn mail_reported(
        &self,
        mail: &outbox::Model,
        event_type: EventType,
        detail: &str,
        suppress: Option<(&MailboxKey, SuppressionCause, Option<i64>)>,
        now: i64,
        masked: &str,
    ) -> CoreResult<bool> {
        let tx = self.begin().await?;
        let user = UserId::from_trusted(mail.user_id.clone());
        if tx.lock_user(&user).await?.is_none() {
            return Ok(false);
        }
        let about = format!("mail:{}", mail.mail_id);
        let backend = tx.backend();
        let seen = tx
            .conn()
            .await?
            .query_one_raw(raw(
                backend,
                "SELECT 1 AS seen FROM events WHERE user_id = $1 AND event_type = $2 \
                 AND request_id = $3 LIMIT 1",
                [
                    mail.user_id.clone().into(),
                    event_type.as_str().into(),
                    about.clone().into(),
                ],
            ))
            .await?
            .is_some();
        if seen {
            return Ok(false);
        }
        if event_type == EventType::MailBounced {
            let update = outbox::Entity::update_many()
                .col_expr(outbox::Column::Bounce, Expr::value(detail.to_owned()))
                .filter(outbox::Column::MailId.eq(mail.mail_id.clone()));
            tx.conn().await?.execute_raw(update.build(backend)).await?;
        }
        if let Some((key, cause, until)) = suppress {
            let upsert = suppress_statement(backend, key, cause, until, detail, now);
            tx.conn().await?.execute_raw(upsert).await?;
        }
        let mut event = outbox_event(mail, event_type, detail, now, masked);
        event.actor = "inbound";
        event.request_id = &about;
        tx.event(event).await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Sent mails marked by one PostgreSQL statement (`Store::mails_sent`): the worker's round.
const SENT_PER_STATEMENT: usize = 32;

impl Store {
    /// Marks a round's sent mails sent (links erased, claims released), each with its
    /// `mail_sent` event, all or none. On PostgreSQL one statement per
    /// [`SENT_PER_STATEMENT`] mails, of one fixed shape (unused slots are NULL, so every
    /// round reuses one prepared statement); on SQLite one transaction. `masked`: each
    /// mail's masked recipient, in order.
    pub async fn mails_sent(&self, sent: &[(outbox::Model, String)], now: i64) -> CoreResult<()> {
        if self.db.get_database_backend() != DbBackend::Postgres {
            let txn = self.db.begin().await?;
            for (mail, masked) in sent {
                let update = erased(attempted(mail))
                    .col_expr(outbox::Column::State, Expr::value(MailState::Sent))
                    .col_expr(outbox::Column::SentAt, Expr::value(now));
                let event = outbox_event(
                    mail,
                    EventType::MailSent,
                    mail.template.as_str(),
                    now,
                    masked,
                );
                txn.execute_raw(update.build(DbBackend::Sqlite)).await?;
                txn.execute_raw(
                    sea_orm::EntityTrait::insert(events::row(event)).build(DbBackend::Sqlite),
                )
                .await?;
            }
            return Ok(txn.commit().await?);
        }
        for chunk in sent.chunks(SENT_PER_STATEMENT) {
            let mut values: Vec<sea_orm::Value> = Vec::with_capacity(2 * SENT_PER_STATEMENT + 4);
            for i in 0..SENT_PER_STATEMENT {
                let (id, masked) = chunk
                    .get(i)
                    .map(|(m, masked)| (Some(m.mail_id.clone()), Some(masked.clone())))
                    .unwrap_or_default();
                values.push(id.into());
                values.push(masked.into());
            }
            values.extend([
                now.into(),
                MailState::Sent.as_str().into(),
                EventType::MailSent.as_str().into(),
                MailState::Pending.as_str().into(),
            ]);
            let n = 2 * SENT_PER_STATEMENT;
            let sql = format!(
                "WITH v(mail_id, masked) AS (VALUES {pairs}), \
                 done AS (UPDATE outbox SET state = ${state}, sent_at = ${now}, \
                            attempts = attempts + 1, sealed_link = NULL, \
                            claimed_until = NULL, claimed_by = NULL \
                          WHERE state = ${pending} AND mail_id IN (SELECT mail_id FROM v) \
                          RETURNING mail_id, user_id, flow_id, template) \
                 INSERT INTO events (user_id, flow_id, event_type, masked_address, detail, at, actor, request_id) \
                 SELECT done.user_id, done.flow_id, ${event}, v.masked, done.template, ${now}, 'mail-worker', '' \
                 FROM done JOIN v USING (mail_id) ORDER BY done.mail_id",
                pairs = (0..SENT_PER_STATEMENT)
                    .map(|i| format!(
                        "(CAST(${} AS TEXT), CAST(${} AS TEXT))",
                        2 * i + 1,
                        2 * i + 2
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
                now = n + 1,
                state = n + 2,
                event = n + 3,
                pending = n + 4,
            );
            self.db
                .execute_raw(raw(DbBackend::Postgres, &sql, values))
                .await?;
        }
        Ok(())
    }
}
