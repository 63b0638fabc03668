//! Optimistic use-cases (PostgreSQL). The hot use-cases (a request, a link confirmation)
//! first run WITHOUT a transaction or a lock: their reads are plain statements, and
//! everything they would write waits in a `Plan` that `commit` sends as ONE static
//! statement per use-case (`sql/request.sql`, `sql/confirm.sql`, `sql/confirm_change.sql`,
//! `sql/confirm_current.sql`), outside a transaction block: the writes as data-modifying
//! CTEs, with
//!
//! - the GUARDS that say the reads still hold: the user's row is updated only `WHERE
//!   version = ` the version read (every locking statement bumps it: `users.rs`), or
//!   inserted only if there was none (`ON CONFLICT DO NOTHING`); a token is consumed
//!   only while live. Each must touch exactly one row;
//! - the rate limits' steps, each of which must fit;
//! - and, last, `emailverify_verdict` (migration `m20261201_000001_user_version`), which
//!   raises an error when a guard did not hold (SQLSTATE 40001) or a limit refused
//!   (`EV429`, with the limit's label). An error rolls back every write of the statement,
//!   so the statement is all or nothing, like the transaction it replaces.
//!
//! A guard that did not hold is `CoreError::contended`: the core runs the use-case again,
//! and its last try takes the locks (`Store::attempts`). The promises stay those of the
//! locked path: one writer per user at a time (the version is a compare-and-swap on the
//! row the lock is taken on), the verified-address index (its violation is EMAIL_TAKEN
//! when the statement verifies an address), the shared limits (their steps are in the
//! statement), and the outbox (a mail is queued in the same statement as the rest).
//! A step that needs a lock (`Tx::locked_only`: e.g. superseding a pending flow, whose
//! end and the next flow's start cannot share one statement) goes straight to the locked
//! try (`CoreError::needs_lock`).

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use serde_json::json;

use super::buckets::refused_step;
use super::entity::user;
use super::error::database_error;
use super::handle::Handle;
use super::reads::RequestRead;
use super::rows::{
    EVENT, FLOW, MAIL, MOVED_FLOW, REQUEST_STEPS, Rows, TOKEN, Take, UserSet, array, columns,
    object,
};
use super::statements;
use crate::error::{CoreError, CoreResult};

/// What an optimistic use-case's one statement must check and write.
#[derive(Default)]
pub(super) struct Plan {
    user: Option<UserWrite>,
    /// The token to consume: (digest, now).
    consume: Option<(String, i64)>,
    takes: Vec<Take>,
    rows: Rows,
    /// A user's row read ahead with a token (`token_with_flow`), and its version.
    pub read_user: Option<(user::Model, i64)>,
    /// `request_read` done ahead with the user's row, for (address, `also_mailed`).
    request_read: Option<(String, Option<String>, RequestRead)>,
}

/// The user's row as the use-case read it, and what it sets on it.
struct UserWrite {
    user_id: String,
    /// The version read; `None`: there was no row.
    version: Option<i64>,
    now: i64,
    set: Option<UserSet>,
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
        read: RequestRead,
    ) {
        self.request_read = Some((email.to_owned(), also_mailed, read));
    }

    /// The request read done ahead, if it was for these arguments.
    pub fn read_ahead(&mut self, email: &str, also_mailed: Option<&str>) -> Option<RequestRead> {
        match &self.request_read {
            Some((e, also, _)) if e == email && also.as_deref() == also_mailed => {
                self.request_read.take().map(|(_, _, read)| read)
            }
            _ => None,
        }
    }

    /// The token `digest` must still be live and unexpired at `now`, and is consumed.
    pub fn consume(&mut self, digest: &str, now: i64) -> CoreResult<()> {
        if self.consume.is_some() {
            return Err(CoreError::needs_lock());
        }
        self.consume = Some((digest.to_owned(), now));
        Ok(())
    }

    /// A rate-limit step that must fit. Two steps of one bucket cannot share a statement.
    pub fn take(&mut self, take: Take) -> CoreResult<()> {
        if self.takes.iter().any(|t| t.bucket == take.bucket) {
            return Err(CoreError::contended());
        }
        self.takes.push(take);
        Ok(())
    }

    /// The fresh rows the statement inserts (and the flow it moves).
    pub fn rows(&mut self) -> &mut Rows {
        &mut self.rows
    }
}

impl UserWrite {
    /// The user's row as `confirm_current.sql` reads it.
    fn row(&self) -> serde_json::Value {
        let mut row = json!({
            "user_id": self.user_id, "version": self.version,
            "created_at": self.now, "updated_at": self.now,
        });
        if let Some(s) = &self.set {
            row["email"] = json!(s.email);
            row["email_key"] = json!(s.key);
            row["email_verified"] = json!(s.verified);
            row["verified_at"] = json!(s.verified_at);
            row["updated_at"] = json!(s.updated_at);
        }
        row
    }
}

/// Sends the plan as ONE statement, its use-case's: `sql/request.sql`, or, when it uses
/// a token, `sql/confirm.sql` (a flow's last step; `sql/confirm_change.sql` when it also
/// mails) or `sql/confirm_current.sql` (a change's first step) (see the module doc). A
/// plan of any other shape (e.g. a request that would also move a flow) has no statement:
/// it runs again locked.
pub(super) async fn commit(db: &Handle, plan: Plan) -> CoreResult<()> {
    if plan.user.is_none()
        && plan.consume.is_none()
        && plan.takes.is_empty()
        && plan.rows.is_empty()
    {
        return Ok(());
    }
    let Some(user) = &plan.user else {
        return Err(CoreError::needs_lock());
    };
    let verifies = user.set.as_ref().is_some_and(|s| s.verified);
    let rows = &plan.rows;
    let steps = || array(&plan.takes.iter().map(Take::row).collect::<Vec<_>>());
    // Each statement gets exactly its parameters, so nothing else is serialized.
    let (sql, values) = match (&plan.consume, rows.moved_flows.as_slice(), &user.set) {
        // A flow's last link: it completes the flow and sets the address; it sends no
        // link and takes no step.
        (Some(token), [flow], Some(set))
            if rows.new_flows.is_empty() && rows.new_tokens.is_empty() && plan.takes.is_empty() =>
        {
            let mut values: Vec<sea_orm::Value> = vec![
                token.0.clone().into(),
                token.1.into(),
                user.user_id.clone().into(),
                user.version.into(),
                set.email.clone().into(),
                set.key.clone().into(),
                set.verified.into(),
                set.verified_at.into(),
                set.updated_at.into(),
            ];
            values.extend(columns(Some(flow), &MOVED_FLOW));
            // A change's notice to the old address goes in the statement that has room
            // for mails; a sign-up's link names no outbox at all.
            let sql = if rows.new_mails.is_empty() {
                statements::CONFIRM
            } else {
                values.push(array(&rows.new_mails));
                statements::CONFIRM_CHANGE
            };
            values.push(array(&rows.new_events));
            (sql, values)
        }
        // A change's first link: it moves the flow on and sends the second link; the
        // address stays as it is.
        (Some((digest, now)), [flow], None) if rows.new_flows.is_empty() => {
            let values = vec![
                object(&json!({ "digest": digest, "used_at": now })),
                object(&user.row()),
                object(flow),
                array(&rows.new_tokens),
                array(&rows.new_mails),
                array(&rows.new_events),
                steps(),
            ];
            (statements::CONFIRM_CURRENT, values)
        }
        // A request starts its flow (one, with one link and its mail) and moves none
        // (superseding one needs the lock).
        (None, [], _)
            if rows.new_flows.len() <= 1
                && rows.new_tokens.len() <= 1
                && rows.new_mails.len() <= 1
                && rows.new_events.len() <= 1
                && plan.takes.len() <= REQUEST_STEPS =>
        {
            let set = user.set.as_ref();
            let mut values: Vec<sea_orm::Value> = vec![
                user.user_id.clone().into(),
                user.version.into(),
                user.now.into(),
                set.map_or(user.now, |s| s.updated_at).into(),
                set.map(|s| s.email.clone()).into(),
                set.map(|s| s.key.clone()).into(),
                set.map(|s| s.verified).into(),
                set.and_then(|s| s.verified_at).into(),
            ];
            values.extend(columns(rows.new_flows.first(), &FLOW));
            values.extend(columns(rows.new_tokens.first(), &TOKEN));
            values.extend(columns(rows.new_mails.first(), &MAIL));
            values.extend(columns(rows.new_events.first(), &EVENT));
            for i in 0..REQUEST_STEPS {
                let take = plan.takes.get(i);
                values.extend([
                    take.map(|t| t.bucket.clone()).into(),
                    take.map(|t| t.now).into(),
                    take.map(|t| t.rate.emission_ms()).into(),
                    take.map(|t| t.rate.period_ms()).into(),
                    take.map(|t| t.label.to_owned()).into(),
                ]);
            }
            (statements::REQUEST, values)
        }
        _ => return Err(CoreError::needs_lock()),
    };
    let stmt = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
    match db.query_one_raw(stmt).await {
        Ok(_) => Ok(()),
        Err(e) => Err(refusal(db, &plan.takes, verifies, e).await),
    }
}

/// What an error of the statement means for the use-case.
async fn refusal(db: &Handle, takes: &[Take], verifies: bool, e: DbErr) -> CoreError {
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
        // The verdict names the refused step by its label, one of this plan's.
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
