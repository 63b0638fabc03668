//! Storage: the only code that speaks sea-orm. The core asks for rows by meaning
//! ("lock this user", "consume this token if it is live"); this module turns that into
//! portable statements for PostgreSQL and SQLite and maps database errors into `CoreError`.
//!
//! Concurrency: every use-case that changes a user's state first locks that user's row
//! (`SELECT … FOR UPDATE` on Postgres; SQLite runs one writer at a time, and the embedded
//! pool holds a single connection). Locks are always taken user → flow → token, so use-cases
//! cannot deadlock each other.

pub mod entity;

use std::sync::Mutex;
use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, DbBackend, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, SqlErr, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

use crate::core::error::{CoreError, CoreResult};
use crate::domain::Rate;
use crate::migrations::Migrator;
use entity::{event, flow, outbox, rate_limit, token, user};

/// Token states as stored.
pub const TOKEN_LIVE: &str = "live";
pub const TOKEN_USED: &str = "used";
pub const TOKEN_SUPERSEDED: &str = "superseded";
/// Outbox states as stored.
pub const MAIL_PENDING: &str = "pending";
pub const MAIL_SENT: &str = "sent";
pub const MAIL_DEAD: &str = "dead";
/// A dead mail that `outbox retry-dead` replaced with a fresh one.
pub const MAIL_RETRIED: &str = "retried";

#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects; for SQLite a single pooled connection (one writer at a time is what
    /// SQLite does anyway, and it keeps `BEGIN` from failing with SQLITE_BUSY).
    pub async fn connect(url: &str) -> Result<Self, sea_orm::DbErr> {
        Self::connect_with_pool(url, 32).await
    }

    /// `pool`: the most PostgreSQL connections this process holds (SQLite always uses one).
    pub async fn connect_with_pool(url: &str, pool: u32) -> Result<Self, sea_orm::DbErr> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5));
        if url.starts_with("sqlite:") {
            opts.max_connections(1).min_connections(1);
        } else {
            opts.max_connections(std::cmp::max(pool, 2))
                .min_connections(2);
        }
        let db = Database::connect(opts).await?;
        if db.get_database_backend() == DbBackend::Sqlite {
            db.execute_unprepared("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;")
                .await?;
        }
        Ok(Self { db })
    }

    pub async fn migrate(&self) -> Result<(), sea_orm::DbErr> {
        Migrator::up(&self.db, None).await
    }

    /// Every migration this binary knows, and whether the database has it (reads only).
    pub async fn migration_status(&self) -> Result<Vec<(String, bool)>, sea_orm::DbErr> {
        use sea_orm_migration::MigrationStatus;
        Ok(Migrator::get_migration_with_status_read_only(&self.db)
            .await?
            .iter()
            .map(|m| (m.name().to_owned(), m.status() == MigrationStatus::Applied))
            .collect())
    }

    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub async fn begin(&self) -> CoreResult<Tx> {
        Ok(Tx {
            txn: self.db.begin().await?,
            unsent: Mutex::new(Vec::new()),
        })
    }

    pub async fn user(&self, user_id: &str) -> CoreResult<Option<user::Model>> {
        Ok(user::Entity::find_by_id(user_id.to_owned())
            .one(&self.db)
            .await?)
    }

    pub async fn pending_flow(&self, user_id: &str) -> CoreResult<Option<flow::Model>> {
        pending_flow(&self.db, user_id).await
    }

    /// The user's events, newest first, strictly older than `before` when given.
    pub async fn events(
        &self,
        user_id: &str,
        before: Option<i64>,
        limit: u64,
    ) -> CoreResult<Vec<event::Model>> {
        let mut q = event::Entity::find().filter(event::Column::UserId.eq(user_id));
        if let Some(before) = before {
            q = q.filter(event::Column::EventId.lt(before));
        }
        Ok(q.order_by_desc(event::Column::EventId)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Appends an audit event outside any use-case transaction (e.g. a refusal, whose
    /// transaction was rolled back). Only for users that exist, so unknown ids cannot fill
    /// the table.
    pub async fn event_if_user_exists(&self, e: NewEvent<'_>) -> CoreResult<()> {
        if self.user(e.user_id).await?.is_some() {
            insert_event(&self.db, e).await?;
        }
        Ok(())
    }

    /// Takes one event from a rate-limit bucket on its own (so it counts even when the
    /// request it guards is then refused).
    pub async fn take(
        &self,
        bucket: &str,
        rate: Rate,
        now: i64,
    ) -> CoreResult<Result<(), Duration>> {
        // One statement steps the bucket atomically: no transaction needed around it.
        take(&self.db, Vec::new(), bucket, rate, now).await
    }

    /// Whether a bucket would allow one more event now, without taking it.
    pub async fn peek(
        &self,
        bucket: &str,
        rate: Rate,
        now: i64,
    ) -> CoreResult<Result<(), Duration>> {
        let row = rate_limit::Entity::find_by_id(bucket.to_owned())
            .one(&self.db)
            .await?;
        Ok(rate.check(row.map(|r| r.tat), now).map(|_| ()))
    }

    // ----- outbox (used by the delivery worker) -----

    /// Claims up to `limit` due mails for `lease`: a conditional update per row, so two
    /// workers (or processes) never hold the same mail at once, and a crashed worker's
    /// claim returns when its lease runs out.
    pub async fn claim_due_mail(
        &self,
        worker: &str,
        now: i64,
        lease: Duration,
        limit: u64,
    ) -> CoreResult<Vec<outbox::Model>> {
        let claimable = || {
            outbox::Column::ClaimedUntil
                .is_null()
                .or(outbox::Column::ClaimedUntil.lt(now))
        };
        let candidates: Vec<String> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::MailId)
            .filter(outbox::Column::State.eq(MAIL_PENDING))
            .filter(outbox::Column::NextAttemptAt.lte(now))
            .filter(claimable())
            .order_by_asc(outbox::Column::NextAttemptAt)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // One conditional update claims whichever candidates nobody else claimed meanwhile;
        // reading back by owner and lease end tells which those were.
        let until = now + crate::core::clock::duration_ms(lease);
        outbox::Entity::update_many()
            .col_expr(outbox::Column::ClaimedUntil, Expr::value(until))
            .col_expr(outbox::Column::ClaimedBy, Expr::value(worker.to_owned()))
            .filter(outbox::Column::MailId.is_in(candidates.iter().cloned()))
            .filter(outbox::Column::State.eq(MAIL_PENDING))
            .filter(claimable())
            .exec(&self.db)
            .await?;
        Ok(outbox::Entity::find()
            .filter(outbox::Column::MailId.is_in(candidates))
            .filter(outbox::Column::ClaimedBy.eq(worker))
            .filter(outbox::Column::ClaimedUntil.eq(until))
            .filter(outbox::Column::State.eq(MAIL_PENDING))
            .order_by_asc(outbox::Column::NextAttemptAt)
            .all(&self.db)
            .await?)
    }

    /// Dead mails, oldest first.
    pub async fn dead_mail(&self) -> CoreResult<Vec<outbox::Model>> {
        Ok(outbox::Entity::find()
            .filter(outbox::Column::State.eq(MAIL_DEAD))
            .order_by_asc(outbox::Column::CreatedAt)
            .all(&self.db)
            .await?)
    }

    /// Mail counts by state, and the age of the oldest pending mail (for metrics).
    pub async fn outbox_stats(&self, now: i64) -> CoreResult<OutboxStats> {
        let pending = outbox::Entity::find()
            .filter(outbox::Column::State.eq(MAIL_PENDING))
            .count(&self.db)
            .await?;
        let dead = outbox::Entity::find()
            .filter(outbox::Column::State.eq(MAIL_DEAD))
            .count(&self.db)
            .await?;
        let oldest = outbox::Entity::find()
            .filter(outbox::Column::State.eq(MAIL_PENDING))
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

    /// Right before a send: extends this worker's claim, only if it is still this
    /// worker's. `false`: the lease ran out and another worker may have the mail now.
    pub async fn renew_claim(
        &self,
        mail_id: &str,
        worker: &str,
        now: i64,
        lease: Duration,
    ) -> CoreResult<bool> {
        let res = outbox::Entity::update_many()
            .col_expr(
                outbox::Column::ClaimedUntil,
                Expr::value(now + crate::core::clock::duration_ms(lease)),
            )
            .filter(outbox::Column::MailId.eq(mail_id))
            .filter(outbox::Column::State.eq(MAIL_PENDING))
            .filter(outbox::Column::ClaimedBy.eq(worker))
            .filter(outbox::Column::ClaimedUntil.gte(now))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// The SMTP server could not be reached: the mail waits for `retry_at` without losing
    /// an attempt (an outage is not the message's fault).
    pub async fn mail_deferred(&self, mail_id: &str, retry_at: i64, error: &str) -> CoreResult<()> {
        outbox::Entity::update_many()
            .col_expr(outbox::Column::NextAttemptAt, Expr::value(retry_at))
            .col_expr(
                outbox::Column::ClaimedUntil,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(
                outbox::Column::ClaimedBy,
                Expr::value(Option::<String>::None),
            )
            .col_expr(outbox::Column::LastError, Expr::value(error.to_owned()))
            .filter(outbox::Column::MailId.eq(mail_id))
            .filter(outbox::Column::State.eq(MAIL_PENDING))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Gives up claims this worker will not use (on shutdown).
    pub async fn release_claims(&self, mail_ids: &[String]) -> CoreResult<()> {
        outbox::Entity::update_many()
            .col_expr(
                outbox::Column::ClaimedUntil,
                Expr::value(Option::<i64>::None),
            )
            .filter(outbox::Column::MailId.is_in(mail_ids.iter().cloned()))
            .filter(outbox::Column::State.eq(MAIL_PENDING))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Marks a mail sent and erases its sealed link, atomically with its event.
    pub async fn mail_sent(&self, mail: &outbox::Model, now: i64, masked: &str) -> CoreResult<()> {
        let backend = self.db.get_database_backend();
        let update = outbox::Entity::update_many()
            .col_expr(outbox::Column::State, Expr::value(MAIL_SENT))
            .col_expr(
                outbox::Column::SealedLink,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                outbox::Column::ClaimedUntil,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(outbox::Column::SentAt, Expr::value(now))
            .col_expr(
                outbox::Column::ClaimedBy,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                outbox::Column::Attempts,
                Expr::col(outbox::Column::Attempts).add(1),
            )
            .filter(outbox::Column::MailId.eq(mail.mail_id.clone()))
            .build(backend);
        let event = event::Entity::insert(event_row(NewEvent {
            user_id: &mail.user_id,
            flow_id: mail.flow_id.as_deref(),
            event_type: "mail_sent",
            masked_address: masked,
            detail: &mail.template,
            at: now,
            actor: "mail-worker",
            request_id: "",
        }))
        .build(backend);
        self.write_together(vec![update, event]).await
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
        let backend = self.db.get_database_backend();
        let mut update = outbox::Entity::update_many()
            .col_expr(
                outbox::Column::Attempts,
                Expr::col(outbox::Column::Attempts).add(1),
            )
            .col_expr(
                outbox::Column::ClaimedUntil,
                Expr::value(Option::<i64>::None),
            )
            .col_expr(
                outbox::Column::ClaimedBy,
                Expr::value(Option::<String>::None),
            )
            .col_expr(outbox::Column::LastError, Expr::value(error.to_owned()));
        let event_type = match retry_at {
            Some(at) => {
                update = update.col_expr(outbox::Column::NextAttemptAt, Expr::value(at));
                "mail_delivery_failed"
            }
            None => {
                update = update
                    .col_expr(outbox::Column::State, Expr::value(MAIL_DEAD))
                    .col_expr(
                        outbox::Column::SealedLink,
                        Expr::value(Option::<String>::None),
                    );
                "mail_dead"
            }
        };
        let update = update
            .filter(outbox::Column::MailId.eq(mail.mail_id.clone()))
            .build(backend);
        let event = event::Entity::insert(event_row(NewEvent {
            user_id: &mail.user_id,
            flow_id: mail.flow_id.as_deref(),
            event_type,
            masked_address: masked,
            detail: error,
            at: now,
            actor: "mail-worker",
            request_id: "",
        }))
        .build(backend);
        self.write_together(vec![update, event]).await
    }

    /// Writes to different tables, all or none: on PostgreSQL one statement (atomic by
    /// itself, one round trip), on SQLite one transaction.
    async fn write_together(&self, mut writes: Vec<Statement>) -> CoreResult<()> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            if let Some(last) = writes.pop() {
                self.db.execute_raw(with_writes(writes, last)).await?;
            }
            return Ok(());
        }
        let txn = self.db.begin().await?;
        for w in writes {
            txn.execute_raw(w).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// The earliest time a pending mail becomes due, if any (for the worker's sleep).
    pub async fn next_mail_due(&self) -> CoreResult<Option<i64>> {
        let row = outbox::Entity::find()
            .filter(outbox::Column::State.eq(MAIL_PENDING))
            .order_by_asc(outbox::Column::NextAttemptAt)
            .one(&self.db)
            .await?;
        Ok(row.map(|r| std::cmp::max(r.next_attempt_at, r.claimed_until.unwrap_or(0))))
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct OutboxStats {
    pub pending: u64,
    pub dead: u64,
    pub oldest_pending_age_ms: i64,
}

/// A use-case's transaction. Dropping it without `commit` rolls everything back, so an
/// error anywhere writes nothing (and queues no mail).
///
/// Round trips: on PostgreSQL the inserts of a use-case (token, mail, flow, event, an
/// unverified address) are not sent one by one. They wait in `unsent` and go out with the
/// transaction's next statement, as data-modifying CTEs in front of it, so a sign-up's
/// writes cost one round trip instead of five. Any statement that could read them sends
/// them first, so the transaction always sees its own writes; only inserts of fresh rows
/// wait (never an update: PostgreSQL runs the parts of one statement on one snapshot, in
/// no fixed order). SQLite runs in-process, so there each write executes at once.
pub struct Tx {
    txn: DatabaseTransaction,
    unsent: Mutex<Vec<Statement>>,
}

/// A mail to queue in the same transaction as the change that causes it.
pub struct NewMail<'a> {
    pub mail_id: String,
    pub user_id: &'a str,
    pub flow_id: Option<&'a str>,
    pub template: &'a str,
    pub recipient: &'a str,
    pub locale: &'a str,
    pub params: String,
    pub sealed_link: Option<String>,
    pub now: i64,
}

pub struct NewToken<'a> {
    pub digest: &'a str,
    pub flow_id: &'a str,
    pub step: &'a str,
    pub expires_at: i64,
    pub code_digest: &'a str,
    pub now: i64,
}

pub struct NewEvent<'a> {
    pub user_id: &'a str,
    pub flow_id: Option<&'a str>,
    pub event_type: &'a str,
    pub masked_address: &'a str,
    pub detail: &'a str,
    pub at: i64,
    pub actor: &'a str,
    pub request_id: &'a str,
}

impl Tx {
    pub async fn commit(self) -> CoreResult<()> {
        self.flush().await?;
        Ok(self.txn.commit().await?)
    }

    /// Queues a write that no other queued write touches the rows of (an insert of a fresh
    /// row; see `Tx`) to go with the next statement; on SQLite runs it at once.
    async fn queue(&self, stmt: Statement) -> CoreResult<()> {
        if self.txn.get_database_backend() == DbBackend::Postgres {
            self.unsent.lock().expect("unsent writes").push(stmt);
            return Ok(());
        }
        self.txn.execute_raw(stmt).await?;
        Ok(())
    }

    fn take_unsent(&self) -> Vec<Statement> {
        std::mem::take(&mut *self.unsent.lock().expect("unsent writes"))
    }

    /// Sends the queued inserts, all in one statement.
    async fn flush(&self) -> CoreResult<()> {
        let mut unsent = self.take_unsent();
        if let Some(last) = unsent.pop() {
            self.txn.execute_raw(with_writes(unsent, last)).await?;
        }
        Ok(())
    }

    /// The transaction, with the queued inserts sent: what every read and update uses.
    async fn conn(&self) -> CoreResult<&DatabaseTransaction> {
        self.flush().await?;
        Ok(&self.txn)
    }

    /// Locks the user's row, creating it first when `create` and it does not exist.
    pub async fn lock_user(
        &self,
        user_id: &str,
        create: bool,
        now: i64,
    ) -> CoreResult<Option<user::Model>> {
        if create {
            // Create-or-lock in one statement: the upsert's update takes the row lock and
            // RETURNING hands back the row.
            let backend = self.txn.get_database_backend();
            let row = self
                .conn()
                .await?
                .query_one_raw(raw(
                    backend,
                    "INSERT INTO users (user_id, email, email_verified, verified_at, created_at, updated_at) \
                     VALUES ($1, NULL, false, NULL, $2, $2) \
                     ON CONFLICT (user_id) DO UPDATE SET updated_at = excluded.updated_at \
                     RETURNING user_id, email, email_verified, verified_at, created_at, updated_at, change_frozen_until",
                    [user_id.into(), now.into()],
                ))
                .await?;
            return match row {
                Some(r) => Ok(Some(user::Model::from_query_result(&r, "")?)),
                None => Ok(None),
            };
        }
        Ok(user::Entity::find_by_id(user_id.to_owned())
            .lock_exclusive()
            .one(self.conn().await?)
            .await?)
    }

    /// The user who has `email` verified, if any.
    pub async fn verified_owner(&self, email: &str) -> CoreResult<Option<String>> {
        Ok(user::Entity::find()
            .filter(user::Column::Email.eq(email))
            .filter(user::Column::EmailVerified.eq(true))
            .one(self.conn().await?)
            .await?
            .map(|u| u.user_id))
    }

    /// Sets the user's address of record. Making an address verified may trip the
    /// verified-address unique index: that, and only that, is `EmailTaken`.
    pub async fn set_user_email(
        &self,
        user_id: &str,
        email: &str,
        verified_at: Option<i64>,
        now: i64,
    ) -> CoreResult<()> {
        let update = user::Entity::update_many()
            .col_expr(user::Column::Email, Expr::value(email.to_owned()))
            .col_expr(
                user::Column::EmailVerified,
                Expr::value(verified_at.is_some()),
            )
            .col_expr(user::Column::VerifiedAt, Expr::value(verified_at))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::UserId.eq(user_id));
        if verified_at.is_none() {
            // An unverified address is outside the unique index and no queued insert
            // touches users: it can wait for the next statement.
            let backend = self.txn.get_database_backend();
            return self.queue(update.build(backend)).await;
        }
        match update.exec(self.conn().await?).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                Err(CoreError::EmailTaken)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn pending_flow(&self, user_id: &str) -> CoreResult<Option<flow::Model>> {
        pending_flow(self.conn().await?, user_id).await
    }

    /// What a new request must know, in one round trip: who has `email` verified (if
    /// anyone) and the user's pending flow (if any).
    pub async fn owner_and_pending(
        &self,
        user_id: &str,
        email: &str,
    ) -> CoreResult<(Option<String>, Option<flow::Model>)> {
        let backend = self.txn.get_database_backend();
        let row = self
            .conn()
            .await?
            .query_one_raw(raw(
                backend,
                "SELECT (SELECT user_id FROM users WHERE email = $1 AND email_verified LIMIT 1) \
                   AS verified_owner, f.* \
                 FROM (SELECT 1 AS one) AS one \
                 LEFT JOIN flows f ON f.user_id = $2 AND f.state = $3",
                [
                    email.into(),
                    user_id.into(),
                    crate::domain::FlowState::Pending.as_str().into(),
                ],
            ))
            .await?
            .ok_or_else(|| CoreError::Internal(anyhow::anyhow!("a one-row select was empty")))?;
        let owner: Option<String> = row.try_get("", "verified_owner")?;
        let flow_id: Option<String> = row.try_get("", "flow_id")?;
        let pending = match flow_id {
            Some(_) => Some(flow::Model::from_query_result(&row, "")?),
            None => None,
        };
        Ok((owner, pending))
    }

    pub async fn flow(&self, flow_id: &str) -> CoreResult<Option<flow::Model>> {
        Ok(flow::Entity::find_by_id(flow_id.to_owned())
            .one(self.conn().await?)
            .await?)
    }

    pub async fn insert_flow(&self, f: flow::Model) -> CoreResult<()> {
        let backend = self.txn.get_database_backend();
        self.queue(flow::Entity::insert(flow::ActiveModel::from(f)).build(backend))
            .await
    }

    /// Moves a flow to a new step/state and records its current link's times.
    pub async fn update_flow(&self, f: &flow::Model) -> CoreResult<()> {
        flow::Entity::update_many()
            .col_expr(flow::Column::Step, Expr::value(f.step.clone()))
            .col_expr(flow::Column::State, Expr::value(f.state.clone()))
            .col_expr(flow::Column::ExpiresAt, Expr::value(f.expires_at))
            .col_expr(
                flow::Column::ResendAvailableAt,
                Expr::value(f.resend_available_at),
            )
            .col_expr(flow::Column::UpdatedAt, Expr::value(f.updated_at))
            .col_expr(flow::Column::FailedCodes, Expr::value(f.failed_codes))
            .col_expr(flow::Column::LockedUntil, Expr::value(f.locked_until))
            .filter(flow::Column::FlowId.eq(f.flow_id.clone()))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }

    /// Every live token of the flow stops working.
    pub async fn supersede_tokens(&self, flow_id: &str) -> CoreResult<()> {
        token::Entity::update_many()
            .col_expr(token::Column::State, Expr::value(TOKEN_SUPERSEDED))
            .filter(token::Column::FlowId.eq(flow_id))
            .filter(token::Column::State.eq(TOKEN_LIVE))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn insert_token(&self, t: NewToken<'_>) -> CoreResult<()> {
        let NewToken {
            digest,
            flow_id,
            step,
            expires_at,
            code_digest,
            now,
        } = t;
        let backend = self.txn.get_database_backend();
        let row = token::ActiveModel {
            digest: Set(digest.to_owned()),
            flow_id: Set(flow_id.to_owned()),
            step: Set(step.to_owned()),
            state: Set(TOKEN_LIVE.to_owned()),
            expires_at: Set(expires_at),
            created_at: Set(now),
            used_at: Set(None),
            code_digest: Set(Some(code_digest.to_owned())),
        };
        self.queue(token::Entity::insert(row).build(backend)).await
    }

    /// The token stored under any of the candidate digests (one per configured key).
    pub async fn find_token(&self, candidates: &[String]) -> CoreResult<Option<token::Model>> {
        Ok(token::Entity::find()
            .filter(token::Column::Digest.is_in(candidates.iter().cloned()))
            .one(self.conn().await?)
            .await?)
    }

    /// Consumes a live, unexpired token: one conditional update, so of any number of
    /// concurrent confirmations exactly one sees `true`.
    pub async fn consume_token(&self, digest: &str, now: i64) -> CoreResult<bool> {
        let res = token::Entity::update_many()
            .col_expr(token::Column::State, Expr::value(TOKEN_USED))
            .col_expr(token::Column::UsedAt, Expr::value(now))
            .filter(token::Column::Digest.eq(digest))
            .filter(token::Column::State.eq(TOKEN_LIVE))
            .filter(token::Column::ExpiresAt.gt(now))
            .exec(self.conn().await?)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// The newest live token of a flow's step (the one a code is checked against).
    pub async fn live_token(&self, flow_id: &str, step: &str) -> CoreResult<Option<token::Model>> {
        Ok(token::Entity::find()
            .filter(token::Column::FlowId.eq(flow_id))
            .filter(token::Column::Step.eq(step))
            .filter(token::Column::State.eq(TOKEN_LIVE))
            .order_by_desc(token::Column::CreatedAt)
            .one(self.conn().await?)
            .await?)
    }

    pub async fn freeze_changes(&self, user_id: &str, until: i64) -> CoreResult<()> {
        user::Entity::update_many()
            .col_expr(user::Column::ChangeFrozenUntil, Expr::value(until))
            .filter(user::Column::UserId.eq(user_id))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }

    /// Takes one event from a rate-limit bucket inside this transaction. Rate-limit rows
    /// are never among the queued inserts, so those ride along in the same statement.
    pub async fn take(
        &self,
        bucket: &str,
        rate: Rate,
        now: i64,
    ) -> CoreResult<Result<(), Duration>> {
        let front = self.take_unsent();
        take(&self.txn, front, bucket, rate, now).await
    }

    pub async fn enqueue_mail(&self, m: NewMail<'_>) -> CoreResult<()> {
        let backend = self.txn.get_database_backend();
        let row = outbox::ActiveModel {
            mail_id: Set(m.mail_id),
            user_id: Set(m.user_id.to_owned()),
            flow_id: Set(m.flow_id.map(str::to_owned)),
            template: Set(m.template.to_owned()),
            recipient: Set(m.recipient.to_owned()),
            locale: Set(m.locale.to_owned()),
            params: Set(m.params),
            sealed_link: Set(m.sealed_link),
            state: Set(MAIL_PENDING.to_owned()),
            attempts: Set(0),
            next_attempt_at: Set(m.now),
            claimed_until: Set(None),
            claimed_by: Set(None),
            last_error: Set(None),
            created_at: Set(m.now),
            sent_at: Set(None),
        };
        self.queue(outbox::Entity::insert(row).build(backend)).await
    }

    pub async fn event(&self, e: NewEvent<'_>) -> CoreResult<()> {
        let backend = self.txn.get_database_backend();
        self.queue(event::Entity::insert(event_row(e)).build(backend))
            .await
    }

    /// Puts a dead mail back in the queue as it is (only for mails without a link: a
    /// dead mail's link was erased).
    pub async fn requeue_mail(&self, mail_id: &str, now: i64) -> CoreResult<()> {
        outbox::Entity::update_many()
            .col_expr(outbox::Column::State, Expr::value(MAIL_PENDING))
            .col_expr(outbox::Column::Attempts, Expr::value(0))
            .col_expr(outbox::Column::NextAttemptAt, Expr::value(now))
            .col_expr(
                outbox::Column::ClaimedUntil,
                Expr::value(Option::<i64>::None),
            )
            .filter(outbox::Column::MailId.eq(mail_id))
            .filter(outbox::Column::State.eq(MAIL_DEAD))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }

    /// Marks a dead mail as replaced by a fresh one.
    pub async fn mark_mail_retried(&self, mail_id: &str) -> CoreResult<()> {
        outbox::Entity::update_many()
            .col_expr(outbox::Column::State, Expr::value(MAIL_RETRIED))
            .filter(outbox::Column::MailId.eq(mail_id))
            .filter(outbox::Column::State.eq(MAIL_DEAD))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }
}

/// GCRA on a shared row, in ONE statement when allowed: an upsert whose update applies
/// only if the event fits (the same formula as `Rate::check`), so the row is created,
/// locked and stepped in a single round trip. When it does not fit, nothing changes and a
/// read says how long to wait.
async fn take<C: ConnectionTrait>(
    db: &C,
    front: Vec<Statement>,
    bucket: &str,
    rate: Rate,
    now: i64,
) -> CoreResult<Result<(), Duration>> {
    let backend = db.get_database_backend();
    let step = raw(
        backend,
        "INSERT INTO rate_limits (bucket, tat) VALUES ($1, $2) \
             ON CONFLICT (bucket) DO UPDATE \
             SET tat = (CASE WHEN rate_limits.tat > $3 THEN rate_limits.tat ELSE $3 END) + $4 \
             WHERE (CASE WHEN rate_limits.tat > $3 THEN rate_limits.tat ELSE $3 END) + $4 - $5 <= $3 \
             RETURNING tat",
        [
            bucket.into(),
            (now + rate.emission_ms()).into(),
            now.into(),
            rate.emission_ms().into(),
            rate.period_ms().into(),
        ],
    );
    let stepped = db.query_one_raw(with_writes(front, step)).await?;
    if stepped.is_some() {
        return Ok(Ok(()));
    }
    let row = rate_limit::Entity::find_by_id(bucket.to_owned())
        .one(db)
        .await?;
    Ok(rate.check(row.map(|r| r.tat), now).map(|_| ()))
}

/// A hand-written statement. Ours are written with `$n`; SQLite spells them `?n`.
fn raw<I: IntoIterator<Item = sea_orm::Value>>(
    backend: DbBackend,
    sql: &str,
    values: I,
) -> Statement {
    let sql = match backend {
        DbBackend::Sqlite => sql.replace('$', "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

async fn pending_flow<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
) -> CoreResult<Option<flow::Model>> {
    Ok(flow::Entity::find()
        .filter(flow::Column::UserId.eq(user_id))
        .filter(flow::Column::State.eq(crate::domain::FlowState::Pending.as_str()))
        .one(db)
        .await?)
}

async fn insert_event<C: ConnectionTrait>(db: &C, e: NewEvent<'_>) -> CoreResult<()> {
    event::Entity::insert(event_row(e))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

fn event_row(e: NewEvent<'_>) -> event::ActiveModel {
    event::ActiveModel {
        event_id: sea_orm::ActiveValue::NotSet,
        user_id: Set(e.user_id.to_owned()),
        flow_id: Set(e.flow_id.map(str::to_owned)),
        event_type: Set(e.event_type.to_owned()),
        masked_address: Set(e.masked_address.to_owned()),
        detail: Set(e.detail.chars().take(256).collect()),
        at: Set(e.at),
        actor: Set(e.actor.chars().take(64).collect()),
        request_id: Set(e.request_id.chars().take(64).collect()),
    }
}

/// One PostgreSQL statement that runs `front` as data-modifying CTEs and then `main`
/// (whose result it returns). Each part keeps its own parameters: its `$n` are shifted
/// past the parts before it. Our statements are built with every value bound, so a `$`
/// in their text is always a placeholder.
fn with_writes(front: Vec<Statement>, main: Statement) -> Statement {
    if front.is_empty() {
        return main;
    }
    let mut sql = String::new();
    let mut values = Vec::new();
    for (i, part) in front.into_iter().enumerate() {
        sql.push_str(if i == 0 { "WITH " } else { ", " });
        sql.push_str(&format!("w{i} AS ("));
        sql.push_str(&shift_placeholders(&part.sql, values.len()));
        sql.push(')');
        values.extend(part.values.map(|v| v.0).unwrap_or_default());
    }
    sql.push(' ');
    sql.push_str(&shift_placeholders(&main.sql, values.len()));
    values.extend(main.values.map(|v| v.0).unwrap_or_default());
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// `$1` → `$(1 + by)`, for every placeholder in `sql`.
fn shift_placeholders(sql: &str, by: usize) -> String {
    debug_assert!(
        !sql.contains('\''),
        "statements combined by with_writes bind every value: {sql}"
    );
    if by == 0 {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while let Some(&(j, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = j + 1;
            chars.next();
        }
        match sql[start..end].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&sql[start..end]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_writes_keep_each_part_s_own_parameters() {
        let pg = |sql: &str, values: Vec<sea_orm::Value>| {
            Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
        };
        let combined = with_writes(
            vec![
                pg("INSERT INTO a VALUES ($1, $2)", vec![1.into(), 2.into()]),
                pg("UPDATE b SET x = $1", vec![3.into()]),
            ],
            pg(
                "INSERT INTO c VALUES ($1, $10) RETURNING y",
                vec![4.into(), 5.into()],
            ),
        );
        assert_eq!(
            combined.sql,
            "WITH w0 AS (INSERT INTO a VALUES ($1, $2)), w1 AS (UPDATE b SET x = $3) \
             INSERT INTO c VALUES ($4, $13) RETURNING y"
        );
        let values: Vec<sea_orm::Value> = combined.values.unwrap().0;
        assert_eq!(
            values,
            vec![1.into(), 2.into(), 3.into(), 4.into(), 5.into()]
        );
    }

    #[test]
    fn a_statement_alone_is_sent_as_it_is() {
        let main = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT $1",
            [sea_orm::Value::from(7)],
        );
        assert_eq!(with_writes(Vec::new(), main.clone()).sql, main.sql);
    }
}
