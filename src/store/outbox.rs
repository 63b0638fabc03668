//! The `outbox` table: mails queued by use-cases in their own transaction, then claimed,
//! sent and marked by the delivery worker (`mail::outbox`).
//!
//! A claim is a lease: `claimed_by` (the worker) and `claimed_until`. Whatever ends or
//! hands back a claim clears both, through `released` — the one place that says what
//! "release the claim" means.

use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, PaginatorTrait,
    QueryFilter, QueryOrder, QueryTrait, UpdateMany,
};

use super::entity::outbox;
use super::events::{self, NewEvent};
use super::{Store, Tx, raw};
use crate::clock::duration_ms;
use crate::domain::{EmailAddress, EventType, FlowId, Locale, MailId, MailState, Template, UserId};
use crate::error::CoreResult;

/// A mail to queue in the same transaction as the change that causes it.
pub struct NewMail<'a> {
    pub mail_id: MailId,
    pub user_id: &'a UserId,
    pub flow_id: Option<&'a FlowId>,
    pub template: Template,
    pub recipient: &'a EmailAddress,
    /// `None`: the flow chose none (the worker writes it in `EMAILVERIFY_DEFAULT_LOCALE`).
    pub locale: Option<Locale>,
    pub params: String,
    pub sealed_link: Option<String>,
    pub now: i64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct OutboxStats {
    pub pending: u64,
    pub dead: u64,
    pub oldest_pending_age_ms: i64,
}

/// The claim of `claim_due_mail`: its batch's size is written in, not a placeholder. The
/// worker's sessions plan generically (`connect::Plans::Generic`), and a generic plan
/// prices `LIMIT $n` at a tenth of the due mails: with 300,000 sent mails kept, it joined
/// the claimed ids back by a sequential scan of the whole outbox at every claim; with the
/// size written in, by the primary key (`statements::the_mail_worker_s_claim_…`). The
/// worker's batch is a constant, so this is one statement text.
pub fn claim_sql(backend: DbBackend, limit: u64) -> String {
    let skip_locked = match backend {
        DbBackend::Postgres => "FOR UPDATE SKIP LOCKED",
        _ => "",
    };
    format!(
        "UPDATE outbox SET claimed_until = $1, claimed_by = $2 \
         WHERE mail_id IN (SELECT mail_id FROM outbox \
           WHERE state = $3 AND next_attempt_at <= $4 \
             AND (claimed_until IS NULL OR claimed_until < $4) \
           ORDER BY next_attempt_at LIMIT {limit} {skip_locked}) \
         RETURNING *"
    )
}

/// An update that also releases the mail's claim.
fn released(update: UpdateMany<outbox::Entity>) -> UpdateMany<outbox::Entity> {
    update
        .col_expr(
            outbox::Column::ClaimedUntil,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(
            outbox::Column::ClaimedBy,
            Expr::value(Option::<String>::None),
        )
}

/// An update of the mail `mail_id` if it is in state `state`.
fn update_if(mail_id: &str, state: MailState) -> UpdateMany<outbox::Entity> {
    outbox::Entity::update_many()
        .filter(outbox::Column::MailId.eq(mail_id))
        .filter(outbox::Column::State.eq(state))
}

impl Tx {
    /// A fresh row, so it may wait for the next statement (see `batch.rs`).
    pub async fn enqueue_mail(&self, m: NewMail<'_>) -> CoreResult<()> {
        let row = outbox::Model {
            mail_id: m.mail_id.into_string(),
            user_id: m.user_id.as_str().to_owned(),
            flow_id: m.flow_id.map(|f| f.as_str().to_owned()),
            template: m.template,
            recipient: m.recipient.as_str().to_owned(),
            locale: Locale::stored(m.locale).to_owned(),
            params: m.params,
            sealed_link: m.sealed_link,
            state: MailState::Pending,
            attempts: 0,
            next_attempt_at: m.now,
            claimed_until: None,
            claimed_by: None,
            last_error: None,
            created_at: m.now,
            sent_at: None,
            bounce: None,
        };
        if self.wait(|rows| rows.new_mail(&row)) {
            return Ok(());
        }
        let insert = outbox::Entity::insert(outbox::ActiveModel::from(row)).build(self.backend());
        self.conn().await?.execute_raw(insert).await?;
        Ok(())
    }

    /// Puts a dead mail back in the queue as it is (only for mails without a link: a
    /// dead mail's link was erased).
    pub async fn requeue_mail(&self, mail_id: &MailId, now: i64) -> CoreResult<()> {
        released(update_if(mail_id.as_str(), MailState::Dead))
            .col_expr(outbox::Column::State, Expr::value(MailState::Pending))
            .col_expr(outbox::Column::Attempts, Expr::value(0))
            .col_expr(outbox::Column::NextAttemptAt, Expr::value(now))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }

    /// Marks a dead mail as replaced by a fresh one: false if it is no longer dead (another
    /// run of the command replaced it first).
    pub async fn mark_mail_retried(&self, mail_id: &MailId) -> CoreResult<bool> {
        let marked = update_if(mail_id.as_str(), MailState::Dead)
            .col_expr(outbox::Column::State, Expr::value(MailState::Retried))
            .exec(self.conn().await?)
            .await?;
        Ok(marked.rows_affected == 1)
    }
}

impl Store {
    /// Claims up to `limit` due mails for `lease`, oldest due first, so two workers (or
    /// processes) never hold the same mail at once, and a crashed worker's claim returns
    /// when its lease runs out. One statement of one fixed shape: on PostgreSQL the rows
    /// are picked `FOR UPDATE SKIP LOCKED` (a concurrent claimer skips them, and a row
    /// claimed meanwhile is re-checked); SQLite has one writer at a time.
    pub async fn claim_due_mail(
        &self,
        worker: &str,
        now: i64,
        lease: Duration,
        limit: u64,
    ) -> CoreResult<Vec<outbox::Model>> {
        let backend = self.db.get_database_backend();
        let values = [
            (now + duration_ms(lease)).into(),
            worker.into(),
            MailState::Pending.as_str().into(),
            now.into(),
        ];
        let sql = claim_sql(backend, limit);
        let rows = self.db.query_all_raw(raw(backend, &sql, values)).await?;
        let mut claimed = rows
            .iter()
            .map(|r| outbox::Model::from_query_result(r, ""))
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|m| m.next_attempt_at);
        Ok(claimed)
    }

    /// Right before a send: extends this worker's claim, only if it is still this
    /// worker's. `false`: the lease ran out and another worker may have the mail now.
    pub async fn renew_claim(
        &self,
        mail_id: &str,
        worker: &str,
        now: i64,
        lease: Duration,
    ) -> CoreResult<bool> {
        let res = update_if(mail_id, MailState::Pending)
            .col_expr(
                outbox::Column::ClaimedUntil,
                Expr::value(now + duration_ms(lease)),
            )
            .filter(outbox::Column::ClaimedBy.eq(worker))
            .filter(outbox::Column::ClaimedUntil.gte(now))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// While a round sends: extends this worker's claims on `mail_ids` that are still
    /// pending and unexpired, so that none is claimed again before the round marks it.
    pub async fn renew_claims(
        &self,
        mail_ids: &[String],
        worker: &str,
        now: i64,
        lease: Duration,
    ) -> CoreResult<u64> {
        let res = outbox::Entity::update_many()
            .col_expr(
                outbox::Column::ClaimedUntil,
                Expr::value(now + duration_ms(lease)),
            )
            .filter(outbox::Column::MailId.is_in(mail_ids.iter().cloned()))
            .filter(outbox::Column::State.eq(MailState::Pending))
            .filter(outbox::Column::ClaimedBy.eq(worker))
            .filter(outbox::Column::ClaimedUntil.gte(now))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected)
    }

    /// Gives up claims this worker will not use (on shutdown, or when the SMTP server is
    /// down): another worker may take them at once.
    pub async fn release_claims(&self, mail_ids: &[String]) -> CoreResult<()> {
        released(outbox::Entity::update_many())
            .filter(outbox::Column::MailId.is_in(mail_ids.iter().cloned()))
            .filter(outbox::Column::State.eq(MailState::Pending))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Gives up every claim `worker` holds (when its sends were cut off at shutdown).
    pub async fn release_claims_of(&self, worker: &str) -> CoreResult<()> {
        released(outbox::Entity::update_many())
            .filter(outbox::Column::ClaimedBy.eq(worker))
            .filter(outbox::Column::State.eq(MailState::Pending))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The SMTP server could not be reached: the mail waits for `retry_at` without losing
    /// an attempt (an outage is not the message's fault).
    pub async fn mail_deferred(&self, mail_id: &str, retry_at: i64, error: &str) -> CoreResult<()> {
        released(update_if(mail_id, MailState::Pending))
            .col_expr(outbox::Column::NextAttemptAt, Expr::value(retry_at))
            .col_expr(outbox::Column::LastError, Expr::value(error.to_owned()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `retry_at`, or dead (link erased) when `None`.
    pub async fn mail_failed(
        &self,
        mail: &outbox::Model,
        now: i64,
        retry_at: Option<i64>,
        error: &str,
        masked: &str,
    ) -> CoreResult<()> {
        let update =
            attempted(mail).col_expr(outbox::Column::LastError, Expr::value(error.to_owned()));
        let (update, event_type) = match retry_at {
            Some(at) => (
                update.col_expr(outbox::Column::NextAttemptAt, Expr::value(at)),
                EventType::MailDeliveryFailed,
            ),
            None => (
                erased(update).col_expr(outbox::Column::State, Expr::value(MailState::Dead)),
                EventType::MailDead,
            ),
        };
        self.delivery_outcome(mail, update, event_type, error, now, masked)
            .await
    }

    /// A delivery attempt's update of the mail and its audit event, all or none.
    async fn delivery_outcome(
        &self,
        mail: &outbox::Model,
        update: UpdateMany<outbox::Entity>,
        event_type: EventType,
        detail: &str,
        now: i64,
        masked: &str,
    ) -> CoreResult<()> {
        let backend = self.db.get_database_backend();
        let event = outbox_event(mail, event_type, detail, now, masked);
        self.write_together(vec![
            update.build(backend),
            sea_orm::EntityTrait::insert(events::row(event)).build(backend),
        ])
        .await
    }

    /// Dead mails, oldest first.
    pub async fn dead_mail(&self) -> CoreResult<Vec<outbox::Model>> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::State.eq(MailState::Dead))
            .order_by_asc(outbox::Column::CreatedAt)
            .all(&self.db)
            .await?)
    }

    /// Mail counts by state, and the age of the oldest pending mail (for metrics).
    pub async fn outbox_stats(&self, now: i64) -> CoreResult<OutboxStats> {
        let in_state =
            |state: MailState| outbox::Entity::find().filter(outbox::Column::State.eq(state));
        let pending = in_state(MailState::Pending).count(&self.db).await?;
        let dead = in_state(MailState::Dead).count(&self.db).await?;
        let oldest = in_state(MailState::Pending)
            .order_by_asc(outbox::Column::CreatedAt)
            .one(&self.db)
            .await?;
        Ok(OutboxStats {
            pending,
            dead,
            oldest_pending_age_ms: oldest
                .map(|m| std::cmp::max(now - m.created_at, 0))
                .unwrap_or(0),
        })
    }

    /// The earliest time a pending mail becomes due, if any (for the worker's sleep).
    pub async fn next_mail_due(&self) -> CoreResult<Option<i64>> {
        let row = outbox::Entity::find()
            .filter(outbox::Column::State.eq(MailState::Pending))
            .order_by_asc(outbox::Column::NextAttemptAt)
            .one(&self.db)
            .await?;
        Ok(row.map(|r| std::cmp::max(r.next_attempt_at, r.claimed_until.unwrap_or(0))))
    }
}

/// The update of an attempt on `mail`: one more attempt, claim released.
pub(super) fn attempted(mail: &outbox::Model) -> UpdateMany<outbox::Entity> {
    released(outbox::Entity::update_many())
        .col_expr(
            outbox::Column::Attempts,
            Expr::col(outbox::Column::Attempts).add(1),
        )
        .filter(outbox::Column::MailId.eq(mail.mail_id.clone()))
}

/// The sealed link is erased once a mail is sent or dead: nobody needs it any more.
pub(super) fn erased(update: UpdateMany<outbox::Entity>) -> UpdateMany<outbox::Entity> {
    update.col_expr(
        outbox::Column::SealedLink,
        Expr::value(Option::<String>::None),
    )
}

pub(super) fn outbox_event<'a>(
    mail: &'a outbox::Model,
    event_type: EventType,
    detail: &'a str,
    now: i64,
    masked: &'a str,
) -> NewEvent<'a> {
    NewEvent {
        user_id: UserId::from_trusted(mail.user_id.clone()),
        flow_id: mail.flow_id.clone().map(FlowId::from_trusted),
        event_type,
        masked_address: masked,
        detail,
        at: now,
        actor: "mail-worker",
        request_id: "",
    }
}
