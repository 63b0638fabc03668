//! Optimistic use-cases (PostgreSQL). The hot use-cases (a request, a link confirmation)
//! first run WITHOUT a transaction or a lock: their reads are plain statements, and
//! everything they would write waits in a `Plan` that `commit` sends as ONE statement,
//! outside a transaction block: the writes as data-modifying CTEs, with
//!
//! - the GUARDS that say the reads still hold: the user's row is updated only `WHERE
//!   version = ` the version read (every locking statement bumps it: `users.rs`), or
//!   inserted only if there was none (`ON CONFLICT DO NOTHING`); a token is consumed
//!   only while live. Each must touch exactly one row;
//! - the rate limits' steps (`limits::step_statement`), each of which must fit;
//! - and, last, `emailverify_verdict` (migration `m20261201_000001_user_version`), which
//!   raises an error when a guard did not hold (SQLSTATE 40001) or a limit refused
//!   (`EV429`, with the limit's name). An error rolls back every write of the statement,
//!   so the statement is all or nothing, like the transaction it replaces.
//!
//! A guard that did not hold is `CoreError::contended`: the core runs the use-case again,
//! and its last try takes the locks (`Core::attempts`). The promises stay those of the
//! locked path: one writer per user at a time (the version is a compare-and-swap on the
//! row the lock is taken on), the verified-address index (its violation is EMAIL_TAKEN
//! when the statement verifies an address), the shared limits (their steps are in the
//! statement), and the outbox (a mail is queued in the same statement as the rest).
//! A step that needs a lock (`Tx::locked_only`: e.g. superseding a pending flow, whose
//! end and the next flow's start cannot share one statement) goes straight to the locked
//! try (`CoreError::needs_lock`).

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use super::batch::{DeferredTake, Handle};
use super::combine::with_writes;
use super::error::database_error;
use super::limits::{refused_step, step_statement};
use crate::error::{CoreError, CoreResult};

/// What an optimistic use-case's one statement must check and write (beside the queued
/// writes of `Tx`).
#[derive(Default)]
pub(super) struct Plan {
    user: Option<UserWrite>,
    guards: Vec<Statement>,
    takes: Vec<DeferredTake>,
    /// A user's row read ahead with a token (`token_with_flow`), and its version.
    pub read_user: Option<(super::entity::user::Model, i64)>,
    /// `request_read` done ahead with the user's row, for (address, `also_mailed`).
    request_read: Option<(String, Option<String>, super::RequestRead)>,
}

/// The user's row as the use-case read it, and what it sets on it.
struct UserWrite {
    user_id: String,
    /// The version read; `None`: there was no row.
    version: Option<i64>,
    now: i64,
    set: Option<UserSet>,
}

/// A user's address, as `set_unverified_email` / `set_verified_email` write it.
pub(super) struct UserSet {
    pub email: String,
    pub key: String,
    pub verified: bool,
    pub verified_at: Option<i64>,
    pub updated_at: i64,
}

impl Plan {
    /// The use-case read `user_id`'s row at `version` (`None`: no row); the statement
    /// writes only if that is still so.
    pub fn expect_user(&mut self, user_id: &str, version: Option<i64>, now: i64) -> CoreResult<()> {
        if self.user.is_some() {
            return Err(CoreError::contended());
        }
        self.user = Some(UserWrite {
            user_id: user_id.to_owned(),
            version,
            now,
            set: None,
        });
        Ok(())
    }

    /// The address the statement writes on the expected user's row.
    pub fn set_user(&mut self, set: UserSet) -> CoreResult<()> {
        match &mut self.user {
            Some(u) => {
                u.set = Some(set);
                Ok(())
            }
            None => Err(CoreError::contended()),
        }
    }

    /// Keeps `read`, the request read for `email` done ahead with the user's row, whose
    /// `also_mailed` is then the user's verified address (see `Tx::request_read`).
    pub fn keep_request_read(
        &mut self,
        email: &str,
        also_mailed: Option<String>,
        read: super::RequestRead,
    ) {
        self.request_read = Some((email.to_owned(), also_mailed, read));
    }

    /// The request read done ahead, if it was for these arguments.
    pub fn read_ahead(
        &mut self,
        email: &str,
        also_mailed: Option<&str>,
    ) -> Option<super::RequestRead> {
        match &self.request_read {
            Some((e, also, _)) if e == email && also.as_deref() == also_mailed => {
                self.request_read.take().map(|(_, _, read)| read)
            }
            _ => None,
        }
    }

    /// A write that must touch exactly one row (e.g. a token's consumption).
    pub fn guard(&mut self, stmt: Statement) {
        self.guards.push(stmt);
    }

    /// A rate-limit step that must fit. Two steps of one bucket cannot share a statement.
    pub fn take(&mut self, take: DeferredTake) -> CoreResult<()> {
        if self.takes.iter().any(|t| t.bucket == take.bucket) {
            return Err(CoreError::contended());
        }
        self.takes.push(take);
        Ok(())
    }
}

impl UserWrite {
    fn statement(&self) -> Statement {
        let (email, key, verified, verified_at, updated_at) = match &self.set {
            Some(s) => (
                Some(s.email.clone()),
                Some(s.key.clone()),
                s.verified,
                s.verified_at,
                s.updated_at,
            ),
            None => (None, None, false, None, self.now),
        };
        let mut values: Vec<Value> = vec![self.user_id.clone().into()];
        let sql = match (self.version, &self.set) {
            (Some(version), Some(_)) => {
                values.extend([
                    email.into(),
                    key.into(),
                    verified.into(),
                    verified_at.into(),
                    updated_at.into(),
                    version.into(),
                ]);
                "UPDATE users SET version = emailverify_next_version(), email = $2, email_key = $3, \
                   email_verified = $4, verified_at = $5, updated_at = $6 \
                 WHERE user_id = $1 AND version = $7 RETURNING user_id"
            }
            (Some(version), None) => {
                values.push(version.into());
                "UPDATE users SET version = emailverify_next_version() \
                 WHERE user_id = $1 AND version = $2 RETURNING user_id"
            }
            (None, _) => {
                values.extend([
                    email.into(),
                    key.into(),
                    verified.into(),
                    verified_at.into(),
                    self.now.into(),
                    updated_at.into(),
                ]);
                "INSERT INTO users (user_id, email, email_key, email_verified, verified_at, \
                   created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (user_id) DO NOTHING RETURNING user_id"
            }
        };
        Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
    }
}

/// Sends the plan and the queued `writes` as ONE statement (see the module doc).
pub(super) async fn commit(db: &Handle, plan: Plan, writes: Vec<Statement>) -> CoreResult<()> {
    let verifies = plan
        .user
        .as_ref()
        .and_then(|u| u.set.as_ref())
        .is_some_and(|s| s.verified);
    let mut front = Vec::new();
    let mut guarded = Vec::new();
    for guard in plan
        .user
        .iter()
        .map(UserWrite::statement)
        .chain(plan.guards)
    {
        guarded.push(format!("(SELECT count(*) FROM w{}) = 1", front.len()));
        front.push(guard);
    }
    front.extend(writes);
    let (mut refused, mut labels) = (String::new(), Vec::<Value>::new());
    for t in &plan.takes {
        labels.push(t.label.into());
        refused.push_str(&format!(
            " WHEN (SELECT count(*) FROM w{}) = 0 THEN ${}",
            front.len(),
            labels.len()
        ));
        front.push(step_statement(
            DbBackend::Postgres,
            &t.bucket,
            t.rate,
            t.now,
        ));
    }
    if front.is_empty() {
        return Ok(());
    }
    let ok = if guarded.is_empty() {
        "true".to_owned()
    } else {
        guarded.join(" AND ")
    };
    let refused = if refused.is_empty() {
        "NULL::text".to_owned()
    } else {
        format!("CASE{refused} END")
    };
    let verdict = Statement::from_sql_and_values(
        DbBackend::Postgres,
        format!("SELECT emailverify_verdict({ok}, {refused}) AS ok"),
        labels,
    );
    match db.query_one_raw(with_writes(front, verdict)).await {
        Ok(_) => Ok(()),
        Err(e) => Err(refusal(db, &plan.takes, verifies, e).await),
    }
}

/// What an error of the statement means for the use-case.
async fn refusal(db: &Handle, takes: &[DeferredTake], verifies: bool, e: DbErr) -> CoreError {
    let Some(found) = database_error(&e) else {
        return e.into();
    };
    match found.code.as_str() {
        // A guard did not hold, a deadlock, a row gone (a foreign key), or a unique index
        // other than the verified addresses' (one pending flow per user): run again.
        "40001" | "40P01" | "23503" => CoreError::contended(),
        "23505" if verifies && found.constraint.starts_with("users_verified_") => {
            CoreError::EmailTaken
        }
        "23505" => CoreError::contended(),
        "EV429" => {
            let Some(t) = takes.iter().find(|t| t.label == found.message) else {
                return e.into();
            };
            match refused_step(db, &t.bucket, t.rate, t.now).await {
                Ok(Err(retry_after)) => CoreError::rate_limited(retry_after, t.label),
                // It fits again already: try again.
                Ok(Ok(())) => CoreError::contended(),
                Err(read) => read,
            }
        }
        _ => e.into(),
    }
}
