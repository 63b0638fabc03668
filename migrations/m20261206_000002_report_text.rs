//! Events hold no text from delivery reports (API.md, release 3, "The bounce listener is
//! not a pen"). Until now the listener wrote a report's status and its diagnostic text
//! (scrubbed of `@` words only) into the `detail` of `mail_bounced`, `mail_delayed` and
//! `mail_complained` events, which ListEvents and the feed serve to support staff and
//! other services, and reports are anyone's to write. This rewrites those details as the
//! listener now writes them: the enhanced status code and a fixed word
//! (`domain::status::report_detail`). Only the listener's events (`actor = 'inbound'`),
//! a small share of the table, in one pass; nothing to undo going down.

use sea_orm::{ConnectionTrait, Statement, Value};
use sea_orm_migration::prelude::*;

use crate::domain::status::report_detail;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT event_id, event_type, detail FROM events \
                 WHERE actor = 'inbound' \
                   AND event_type IN ('mail_bounced', 'mail_delayed', 'mail_complained')",
            ))
            .await?;
        for row in rows {
            let id: i64 = row.try_get("", "event_id")?;
            let event_type: String = row.try_get("", "event_type")?;
            let detail: String = row.try_get("", "detail")?;
            let word = match event_type.as_str() {
                "mail_bounced" => "bounced",
                "mail_delayed" => "delayed",
                _ => "complained",
            };
            let clean = report_detail(&detail, word);
            if clean != detail {
                db.execute_raw(Statement::from_sql_and_values(
                    backend,
                    match backend {
                        sea_orm::DbBackend::Postgres => {
                            "UPDATE events SET detail = $1 WHERE event_id = $2"
                        }
                        _ => "UPDATE events SET detail = ? WHERE event_id = ?",
                    },
                    [Value::from(clean), Value::from(id)],
                ))
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
