//! The release-3 migrations on a database written at the schema before them: rate-limit
//! buckets of the old, unkeyed names go (their keyed names cannot be computed from them),
//! and the listener's events lose the report text they held.

use emailverify::migrations::Migrator;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use sea_orm_migration::MigratorTrait;

use crate::helpers::{Backend, fresh_database};

async fn exec(conn: &DatabaseConnection, sql: &str) {
    conn.execute_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn column(conn: &DatabaseConnection, sql: &str) -> Vec<String> {
    let rows = conn
        .query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get_by_index(0).unwrap())
        .collect()
}

async fn release_3_drops_unkeyed_buckets_and_report_text(backend: Backend) {
    let db = fresh_database(backend).await;
    let conn = Database::connect(&db.url).await.unwrap();
    let before = Migrator::migrations()
        .iter()
        .position(|m| m.name() == "m20261206_000001_keyed_limits")
        .expect("the keyed-limits migration is listed");
    Migrator::up(&conn, Some(before as u32)).await.unwrap();
    exec(
        &conn,
        "INSERT INTO rate_limits (bucket, tat) VALUES \
         ('user:0a1b', 1), ('rcpt:2c3d', 1), ('ip:4e5f', 1), ('u:6a7b', 1)",
    )
    .await;
    for (event_type, actor, detail) in [
        (
            "mail_delayed",
            "inbound",
            "4.4.1 URGENT call support +1-555-0100 jane＠victim.example",
        ),
        (
            "mail_bounced",
            "inbound",
            "5.1.1 550 no such user j***@example.com",
        ),
        ("mail_complained", "inbound", "abuse: call +1-555-0100"),
        ("mail_sent", "mail-worker", "verify_link"),
    ] {
        exec(
            &conn,
            &format!(
                "INSERT INTO events (user_id, flow_id, event_type, masked_address, detail, at, actor, request_id, repeats, feed_tx) \
                 VALUES ('user-1', NULL, '{event_type}', '', '{detail}', 1, '{actor}', '', 1, 0)"
            ),
        )
        .await;
    }
    Migrator::up(&conn, None).await.unwrap();

    assert_eq!(
        column(&conn, "SELECT bucket FROM rate_limits").await,
        vec!["u:6a7b".to_string()],
        "only a bucket of the new names stays"
    );
    assert_eq!(
        column(&conn, "SELECT detail FROM events ORDER BY event_id").await,
        vec![
            "4.4.1 delayed",
            "5.1.1 bounced",
            "complained",
            "verify_link"
        ],
    );
}

crate::on_both_backends!(release_3_drops_unkeyed_buckets_and_report_text);
