//! The `users` table: one row per wallet user, holding the address of record and the
//! key of the inbox it reaches (`email_key`). The unique index on the keys of verified
//! addresses is what makes "taken" a database fact: two spellings of one inbox cannot
//! both be verified. The key is computed here, from the address written, so a row's key
//! always belongs to its address.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryTrait,
    SqlErr, Statement,
};

use super::buckets::{Step, refused_step};
use super::entity::user;
use super::entity::user::key_of;
use super::rows::{Take, UserSet};
use super::{Store, Tx, raw, statements};
use crate::domain::{EmailAddress, MailboxKey, Rate, TokenDigest, UserId};
use crate::error::{CoreError, CoreResult};

impl Store {
    pub async fn user(&self, user_id: &UserId) -> CoreResult<Option<user::Model>> {
        Ok(user::Entity::find_by_id(user_id.as_str())
            .one(&self.db)
            .await?)
    }
}

/// The user's row, created if missing and locked (the upsert's update takes the lock).
fn upsert(backend: DbBackend, user_id: &str, now: i64) -> Statement {
    let sql = format!(
        "INSERT INTO users (user_id, email, email_verified, verified_at, created_at, updated_at) \
         VALUES ($1, NULL, false, NULL, $2, $2) \
         ON CONFLICT (user_id) DO UPDATE SET updated_at = excluded.updated_at, \
           version = {} \
         RETURNING user_id, email, email_key, email_verified, verified_at, created_at, updated_at, change_frozen_until",
        next_version(backend)
    );
    raw(backend, &sql, [user_id.into(), now.into()])
}

/// A user's next version: on PostgreSQL the sequence's next value, never given before
/// (the migration `m20261201_000002_version_sequence` says why); SQLite runs no optimistic
/// use-case, so it only counts.
fn next_version(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "emailverify_next_version()",
        _ => "users.version + 1",
    }
}

/// The lock of a user's row on PostgreSQL: an update that bumps its version, so an
/// optimistic use-case that read the row before knows it changed (`optimistic.rs`).
fn lock_statement(user_id: &str) -> Statement {
    raw(
        DbBackend::Postgres,
        "UPDATE users SET version = emailverify_next_version() WHERE user_id = $1 RETURNING *",
        [user_id.into()],
    )
}

/// What `Tx::lock_user_consuming` did with a token.
pub enum Consuming {
    /// Consumed under the user's lock, or (optimistic) consumed by the statement at commit,
    /// which holds only if neither the token nor the user changed since they were read:
    /// the user's row. `read_flow_again`: locked, the token's flow was read before the
    /// lock was waited for and may have changed meanwhile; optimistic, the statement's
    /// guards stand for that, and the flow as read is the one.
    Consumed {
        user: user::Model,
        read_flow_again: bool,
    },
    /// Not consumed (locked): the token is no longer live, or its user is gone. Read the
    /// token again to say which.
    Refused,
}

/// A user's row and the `counted` beside it (`sql/lock_user_*.sql`), if there is a user.
async fn user_counted(
    conn: &impl ConnectionTrait,
    stmt: Statement,
) -> CoreResult<Option<(user::Model, i64)>> {
    let Some(row) = conn.query_one_raw(stmt).await? else {
        return Ok(None);
    };
    let counted: i64 = row.try_get("", "counted")?;
    Ok(Some((user::Model::from_query_result(&row, "")?, counted)))
}

impl Tx {
    /// Creates the user's row if it does not exist, and locks it: one statement (the
    /// upsert's update takes the row lock and RETURNING hands back the row).
    pub async fn create_or_lock_user(&self, user_id: &UserId, now: i64) -> CoreResult<user::Model> {
        self.locked_only()?;
        let row = self
            .conn()
            .await?
            .query_one_raw(upsert(self.backend(), user_id.as_str(), now))
            .await?
            .ok_or_else(|| CoreError::Internal(anyhow::anyhow!("an upsert returned no row")))?;
        Ok(user::Model::from_query_result(&row, "")?)
    }

    /// `create_or_lock_user`, and one step of the rate-limit `bucket` under that lock: on
    /// PostgreSQL in ONE statement (the user's upsert, then the bucket's; every statement
    /// of this shape locks in that order, so two cannot deadlock), on SQLite one after
    /// the other. `request_email`: the address the request is for; an optimistic
    /// use-case reads what `request_read` will need for it with the user's row.
    pub async fn create_or_lock_user_taking(
        &self,
        user_id: &UserId,
        request_email: &EmailAddress,
        now: i64,
        bucket: &str,
        rate: Rate,
    ) -> CoreResult<(user::Model, Step)> {
        if self.is_optimistic() {
            return self
                .read_user_taking(user_id, request_email, now, bucket, rate)
                .await;
        }
        if self.backend() != DbBackend::Postgres {
            let row = self.create_or_lock_user(user_id, now).await?;
            return Ok((row, self.take(bucket, rate, now).await?));
        }
        let conn = self.conn().await?;
        let values = [
            user_id.as_str().into(),
            now.into(),
            bucket.into(),
            rate.emission_ms().into(),
            rate.period_ms().into(),
        ];
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            statements::LOCK_USER_TAKING,
            values,
        );
        let (user, stepped) = user_counted(conn, stmt)
            .await?
            .ok_or_else(|| CoreError::Internal(anyhow::anyhow!("an upsert returned no row")))?;
        let step = if stepped > 0 {
            Ok(())
        } else {
            refused_step(conn, bucket, rate, now).await?
        };
        Ok((user, step))
    }

    /// Locks the user's row (if the user exists) and then consumes the live, unexpired
    /// token `digest` under that lock (`consume_token`): on PostgreSQL in ONE statement,
    /// user first, as every use-case locks; the token's update re-checks the newest
    /// version of its row, so of concurrent confirmations exactly one consumes it.
    pub async fn lock_user_consuming(
        &self,
        user_id: &UserId,
        digest: &TokenDigest,
        now: i64,
    ) -> CoreResult<Consuming> {
        let locked = |row: Option<user::Model>, consumed: bool| match row {
            Some(user) if consumed => Consuming::Consumed {
                user,
                read_flow_again: true,
            },
            _ => Consuming::Refused,
        };
        if self.backend() != DbBackend::Postgres {
            let row = self.lock_user(user_id).await?;
            return Ok(locked(row, self.consume_token(digest, now).await?));
        }
        if let Some(mut plan) = self.plan() {
            // The user as read with the token (`token_with_flow`), and the token's
            // consumption as a guard: the statement at commit holds only if both still
            // are as read.
            let Some((row, version)) = plan.read_user.take() else {
                return Err(CoreError::Internal(anyhow::anyhow!("flow without user")));
            };
            plan.expect_user(user_id.as_str(), Some(version), now)?;
            plan.consume(&digest.0, now)?;
            return Ok(Consuming::Consumed {
                user: row,
                read_flow_again: false,
            });
        }
        let values = [
            user_id.as_str().into(),
            digest.0.as_str().into(),
            now.into(),
        ];
        let stmt = Statement::from_sql_and_values(
            DbBackend::Postgres,
            statements::LOCK_USER_CONSUMING,
            values,
        );
        Ok(match user_counted(self.conn().await?, stmt).await? {
            Some((user, consumed)) => locked(Some(user), consumed == 1),
            None => Consuming::Refused,
        })
    }

    /// Locks the user's row, if the user exists.
    pub async fn lock_user(&self, user_id: &UserId) -> CoreResult<Option<user::Model>> {
        self.locked_only()?;
        if self.backend() == DbBackend::Postgres {
            let row = self
                .conn()
                .await?
                .query_one_raw(lock_statement(user_id.as_str()))
                .await?;
            return Ok(row
                .map(|r| user::Model::from_query_result(&r, ""))
                .transpose()?);
        }
        Ok(user::Entity::find_by_id(user_id.as_str())
            .one(self.conn().await?)
            .await?)
    }

    /// Optimistic `create_or_lock_user_taking`: the user's row as it is (or, if there is
    /// none, as the statement at commit will insert it), with the expectation that it
    /// stays so and the limit's step in the plan. The step's answer comes with commit.
    async fn read_user_taking(
        &self,
        user_id: &UserId,
        request_email: &EmailAddress,
        now: i64,
        bucket: &str,
        rate: Rate,
    ) -> CoreResult<(user::Model, Step)> {
        let (read, request_read) = self
            .user_and_request_read(user_id, request_email, now)
            .await?;
        // The read looked suppressions up for the stored key of the user's verified
        // address; it stands for `request_read(.., Some(address))` only if that key is the
        // address's (a row from before mailbox keys may lack it: then a real read follows).
        let also_mailed = read
            .as_ref()
            .map(|(u, _)| u)
            .filter(|u| u.email_verified)
            .and_then(|u| {
                let email = u.email.as_ref()?;
                (u.email_key.as_deref() == Some(key_of(email).as_str())).then(|| email.clone())
            });
        self.plan().expect("optimistic").keep_request_read(
            request_email.as_str(),
            also_mailed,
            request_read,
        );
        let version = read.as_ref().map(|(_, v)| *v);
        let row = read.map(|(row, _)| row).unwrap_or(user::Model {
            user_id: user_id.as_str().to_owned(),
            email: None,
            email_key: None,
            email_verified: false,
            verified_at: None,
            created_at: now,
            updated_at: now,
            change_frozen_until: None,
        });
        self.plan()
            .expect("optimistic")
            .expect_user(user_id.as_str(), version, now)?;
        let step = Take {
            bucket: bucket.to_owned(),
            rate,
            now,
            label: "user",
        };
        self.defer_take(step).await?;
        Ok((row, Ok(())))
    }

    /// The user's row (already locked by this transaction, or read as it is).
    pub async fn user(&self, user_id: &UserId) -> CoreResult<Option<user::Model>> {
        Ok(user::Entity::find_by_id(user_id.as_str())
            .one(self.conn().await?)
            .await?)
    }

    /// The user who has an address of the inbox `key` verified, if any.
    pub async fn verified_owner(&self, key: &MailboxKey) -> CoreResult<Option<UserId>> {
        Ok(user::Entity::find()
            .filter(user::Column::EmailKey.eq(key.as_str()))
            .filter(user::Column::EmailVerified.eq(true))
            .one(self.conn().await?)
            .await?
            .map(|u| UserId::from_trusted(u.user_id)))
    }

    /// Records `email` (a normalised address) as the (locked) user's address, unverified,
    /// with its key. An unverified address
    /// is outside the unique index and no queued write touches `users`, so this write
    /// may wait for the next statement (see `batch.rs`).
    pub async fn set_unverified_email(
        &self,
        user_id: &UserId,
        email: &EmailAddress,
        now: i64,
    ) -> CoreResult<()> {
        let set = address(email, false, now);
        let update = address_update(user_id, &set, self.backend());
        if self.set_address(user_id.as_str(), set).await? {
            return Ok(());
        }
        self.conn().await?.execute_raw(update).await?;
        Ok(())
    }

    /// Makes `email` (a normalised address) the user's verified address. It may trip the
    /// unique index on verified keys if another user won a race for the same inbox: that,
    /// and only that, is `EmailTaken`.
    pub async fn set_verified_email(
        &self,
        user_id: &UserId,
        email: &EmailAddress,
        now: i64,
    ) -> CoreResult<()> {
        let set = address(email, true, now);
        let update = address_update(user_id, &set, self.backend());
        if self.set_address(user_id.as_str(), set).await? {
            if self.is_optimistic() {
                // The index's verdict comes with the statement at commit (`optimistic.rs`).
                return Ok(());
            }
            // Sent at once: the index's verdict is this use-case's (`Tx::flush`).
            self.conn().await?;
            return Ok(());
        }
        match self.conn().await?.execute_raw(update).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                Err(CoreError::EmailTaken)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes `email` off the (locked) user while it is still unverified there (a sign-up
    /// reported as "this wasn't me"): the user has no address afterwards.
    pub async fn remove_unverified_email(
        &self,
        user_id: &UserId,
        email: &EmailAddress,
        now: i64,
    ) -> CoreResult<()> {
        self.locked_only()?;
        user::Entity::update_many()
            .col_expr(user::Column::Email, Expr::value(Option::<String>::None))
            .col_expr(user::Column::EmailKey, Expr::value(Option::<String>::None))
            .col_expr(user::Column::UpdatedAt, Expr::value(now))
            .filter(user::Column::UserId.eq(user_id.as_str()))
            .filter(user::Column::Email.eq(email.as_str()))
            .filter(user::Column::EmailVerified.eq(false))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }

    pub async fn freeze_changes(&self, user_id: &UserId, until: i64) -> CoreResult<()> {
        self.locked_only()?;
        user::Entity::update_many()
            .col_expr(user::Column::ChangeFrozenUntil, Expr::value(until))
            .filter(user::Column::UserId.eq(user_id.as_str()))
            .exec(self.conn().await?)
            .await?;
        Ok(())
    }
}

/// `email` as a user's address of record, verified or not, with its key.
fn address(email: &EmailAddress, verified: bool, now: i64) -> UserSet {
    UserSet {
        email: email.as_str().to_owned(),
        key: email.mailbox_key().into_string(),
        verified,
        verified_at: verified.then_some(now),
        updated_at: now,
    }
}

/// The update that writes `set` on a user's row (a locked use-case's).
fn address_update(user_id: &UserId, set: &UserSet, backend: DbBackend) -> Statement {
    user::Entity::update_many()
        .col_expr(user::Column::Email, Expr::value(set.email.clone()))
        .col_expr(user::Column::EmailKey, Expr::value(set.key.clone()))
        .col_expr(user::Column::EmailVerified, Expr::value(set.verified))
        .col_expr(user::Column::VerifiedAt, Expr::value(set.verified_at))
        .col_expr(user::Column::UpdatedAt, Expr::value(set.updated_at))
        .filter(user::Column::UserId.eq(user_id.as_str()))
        .build(backend)
}
