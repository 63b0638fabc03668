//! The change feed's reads (WatchEvents): events after a position, in feed order, never
//! past a position a later commit could still take (see the feed migration). A position
//! is `(feed_tx, event_id)`.

use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Value};

use super::entity::event;
use super::{Store, raw};
use crate::error::CoreResult;

/// A place in the feed: after the event at `(tx, id)`.
pub type FeedPos = (i64, i64);

/// The horizon below which every transaction has ended (PostgreSQL): no event can be
/// committed at a position below it any more.
const HORIZON: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

impl Store {
    /// Up to `limit` events after `after`, in feed order, of `types` (all when empty), and
    /// not past `upto` when given (a position an earlier read reached: every event up to it
    /// is committed, so such a read is final).
    pub async fn feed_after(
        &self,
        after: FeedPos,
        types: &[String],
        limit: u64,
        upto: Option<FeedPos>,
    ) -> CoreResult<Vec<event::Model>> {
        let backend = self.db.get_database_backend();
        let mut values: Vec<Value> = vec![after.0.into(), after.1.into(), (limit as i64).into()];
        let mut filter = String::new();
        if let Some((tx, id)) = upto {
            let n = values.len();
            filter = match backend {
                DbBackend::Postgres => {
                    format!("AND (feed_tx, event_id) <= (${}, ${}) ", n + 1, n + 2)
                }
                _ => format!("AND event_id <= ${} AND ${} = ${} ", n + 2, n + 1, n + 1),
            };
            values.extend([Value::from(tx), Value::from(id)]);
        }
        if !types.is_empty() {
            let n = values.len();
            let marks: Vec<String> = (0..types.len())
                .map(|i| format!("${}", n + i + 1))
                .collect();
            filter.push_str(&format!("AND event_type IN ({})", marks.join(", ")));
            values.extend(types.iter().map(|t| Value::from(t.clone())));
        }
        let sql = match backend {
            DbBackend::Postgres => format!(
                "SELECT * FROM events WHERE (feed_tx, event_id) > ($1, $2) \
                   AND feed_tx < {HORIZON} {filter} \
                 ORDER BY feed_tx, event_id LIMIT $3"
            ),
            _ => format!(
                "SELECT * FROM events WHERE event_id > $2 AND $1 = $1 {filter} \
                 ORDER BY event_id LIMIT $3"
            ),
        };
        let rows = self.db.query_all_raw(raw(backend, &sql, values)).await?;
        Ok(rows
            .iter()
            .map(|r| event::Model::from_query_result(r, ""))
            .collect::<Result<_, _>>()?)
    }

    /// Where "from now on" starts: after every event a reader could see now.
    pub async fn feed_head(&self) -> CoreResult<FeedPos> {
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => format!("SELECT {HORIZON} AS tx, CAST(0 AS BIGINT) AS id"),
            _ => "SELECT CAST(0 AS BIGINT) AS tx, CAST(COALESCE(MAX(event_id), 0) AS BIGINT) AS id FROM events".to_owned(),
        };
        self.position(&sql).await.map(|p| p.unwrap_or((0, 0)))
    }

    /// The oldest event still kept, if any (a cursor before it has lost events).
    pub async fn feed_oldest(&self) -> CoreResult<Option<FeedPos>> {
        self.position(
            "SELECT feed_tx AS tx, event_id AS id FROM events ORDER BY feed_tx, event_id LIMIT 1",
        )
        .await
    }

    async fn position(&self, sql: &str) -> CoreResult<Option<FeedPos>> {
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(raw(backend, sql, Vec::<Value>::new()))
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("", "tx")?, r.try_get("", "id")?)),
            None => None,
        })
    }
}
