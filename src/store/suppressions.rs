//! The `suppressions` table: inboxes no mail may go to, keyed by mailbox key. A bounce
//! (5.1.x: no such mailbox) suppresses until `until`; a complaint until lifted (`until`
//! NULL). A complaint is never downgraded to a bounce by a later bounce.

use sea_orm::ConnectionTrait;

use super::reads::{Suppression, SuppressionCause};
use super::{Store, Tx, raw};
use crate::domain::MailboxKey;
use crate::error::CoreResult;

/// The first suppression in force at `now` among the inboxes `keys`.
async fn active<C: ConnectionTrait>(
    db: &C,
    keys: &[MailboxKey],
    now: i64,
) -> CoreResult<Option<Suppression>> {
    if keys.is_empty() {
        return Ok(None);
    }
    let places: Vec<String> = (0..keys.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT cause, \"until\" FROM suppressions \
         WHERE (\"until\" IS NULL OR \"until\" > $1) AND email_key IN ({}) \
         ORDER BY cause DESC, \"until\" DESC LIMIT 1",
        places.join(", ")
    );
    let mut values: Vec<sea_orm::Value> = vec![now.into()];
    values.extend(keys.iter().map(|k| k.as_str().into()));
    let row = db
        .query_one_raw(raw(db.get_database_backend(), &sql, values))
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Suppression {
        cause: SuppressionCause::parse(&row.try_get::<String>("", "cause")?),
        until: row.try_get("", "until")?,
    }))
}

impl Tx {
    /// A suppression in force for any of the inboxes `keys`, read inside a use-case.
    pub async fn suppression(
        &self,
        keys: &[MailboxKey],
        now: i64,
    ) -> CoreResult<Option<Suppression>> {
        active(self.conn().await?, keys, now).await
    }
}

impl Store {
    pub async fn suppression(&self, key: &MailboxKey, now: i64) -> CoreResult<Option<Suppression>> {
        active(&self.db, std::slice::from_ref(key), now).await
    }

    /// Suppresses the inbox `key`: a bounce until `until`, a complaint until lifted. One
    /// upsert; an existing complaint stays as it is.
    pub async fn suppress(
        &self,
        key: &MailboxKey,
        cause: SuppressionCause,
        until: Option<i64>,
        detail: &str,
        now: i64,
    ) -> CoreResult<()> {
        let backend = self.db.get_database_backend();
        self.db
            .execute_raw(suppress_statement(backend, key, cause, until, detail, now))
            .await?;
        Ok(())
    }

    /// Lifts the suppression of `key`; `false` when none was in force (an expired one is
    /// removed all the same).
    pub async fn lift_suppression(&self, key: &MailboxKey, now: i64) -> CoreResult<bool> {
        let backend = self.db.get_database_backend();
        let rows = self
            .db
            .query_all_raw(raw(
                backend,
                "DELETE FROM suppressions WHERE email_key = $1 RETURNING \"until\"",
                [key.as_str().into()],
            ))
            .await?;
        let mut was_active = false;
        for row in rows {
            let until: Option<i64> = row.try_get("", "until")?;
            was_active |= until.is_none_or(|u| u > now);
        }
        Ok(was_active)
    }
}

/// The upsert of [`Store::suppress`], for a caller's own transaction too.
pub(super) fn suppress_statement(
    backend: sea_orm::DbBackend,
    key: &MailboxKey,
    cause: SuppressionCause,
    until: Option<i64>,
    detail: &str,
    now: i64,
) -> sea_orm::Statement {
    let until = match cause {
        SuppressionCause::Complained => None,
        SuppressionCause::Bounced => until,
    };
    let detail: String = detail.chars().take(128).collect();
    raw(
        backend,
        "INSERT INTO suppressions (email_key, cause, \"until\", detail, created_at) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (email_key) DO UPDATE SET cause = excluded.cause, \
           \"until\" = excluded.\"until\", detail = excluded.detail, \
           created_at = excluded.created_at \
         WHERE suppressions.cause <> $6",
        [
            key.as_str().into(),
            cause.as_str().into(),
            until.into(),
            detail.into(),
            now.into(),
            SuppressionCause::Complained.as_str().into(),
        ],
    )
}
