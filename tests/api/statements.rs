//! The static statements of `src/store/sql/` (PostgreSQL): each one's plan looks every row
//! up by an index (so a lost index shows here, not as a slow production), and the guard of
//! `confirm.sql` and `confirm_current.sql` that the other tests cannot isolate — a token no
//! longer live — fires.
//! The other guards fire in `optimistic.rs`: the user's version, a user created meanwhile,
//! a limit's step, the index of verified addresses.

use emailverify::domain::{EmailAddress, FlowStep, TokenDigest, UserId};
use emailverify::mail::outbox::MAILS_PER_ROUND;
use emailverify::store::claim_sql;
use emailverify::store::statements::ALL;
use emailverify::store::{Consuming, NewToken};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

use crate::helpers::{Backend, TestDb, fresh_database, postgres_available};

async fn exec(conn: &DatabaseConnection, sql: &str) {
    conn.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A fresh, migrated PostgreSQL database and ONE session on it: a prepared statement and a
/// setting live in one session.
async fn one_session() -> (TestDb, DatabaseConnection) {
    let db = fresh_database(Backend::Postgres).await;
    let store = emailverify::store::Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let mut one = sea_orm::ConnectOptions::new(db.url.clone());
    one.max_connections(1).min_connections(1);
    let conn = Database::connect(one).await.unwrap();
    (db, conn)
}

/// The plan PostgreSQL makes for `sql` (a statement, or `EXECUTE` of a prepared one), a
/// line each.
async fn plan_of(conn: &DatabaseConnection, sql: &str) -> Vec<String> {
    conn.query_all_raw(Statement::from_string(
        conn.get_database_backend(),
        format!("EXPLAIN {sql}"),
    ))
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get_by_index::<String>(0).unwrap())
    .collect()
}

/// Sample arguments for a statement's placeholders, by file: enough to plan it (the plan
/// is the generic one, as on a pooled connection: the values do not shape it).
fn arguments(name: &str) -> String {
    let nulls = |n: usize| vec!["NULL"; n].join(", ");
    match name {
        "writes.sql" => "'[]', '[]', '[]', '[]', '[]', '[]', '[]'".into(),
        // the user's row, the flow, its token, its mail, its event and three steps, a
        // column each
        "request.sql" => nulls(8 + 14 + 8 + 17 + 8 + 3 * 5),
        // the token, the user's row and the flow a column each; mails, events
        "confirm.sql" => format!("{}, '[]'", nulls(2 + 7 + 8)),
        "confirm_change.sql" => format!("{}, '[]', '[]'", nulls(2 + 7 + 8)),
        "confirm_current.sql" => "'{}', '{}', '{}', '[]', '[]', '[]', '[]'".into(),
        "lock_user_taking.sql" => "'u1', 1, 'u:x', 1000, 60000".into(),
        "lock_user_consuming.sql" => "'u1', 'digest', 1".into(),
        other => panic!("no sample arguments for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_static_statement_finds_its_rows_by_an_index() {
    if !postgres_available().await {
        return;
    }
    let (_db, conn) = one_session().await;
    // With sequential scans priced out, a plan still holds one only where no index can
    // serve the lookup: that is what a lost index looks like.
    exec(&conn, "SET enable_seqscan = off").await;
    // The plan a pooled connection runs after its first executions: the generic one.
    exec(&conn, "SET plan_cache_mode = force_generic_plan").await;
    for (name, sql) in ALL {
        let body: String = sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        exec(&conn, &format!("PREPARE s AS {body}")).await;
        let plan = plan_of(&conn, &format!("EXECUTE s({})", arguments(name))).await;
        println!("-- {name}\n{}", plan.join("\n"));
        for table in [
            "users",
            "flows",
            "tokens",
            "outbox",
            "events",
            "rate_limits",
        ] {
            assert!(
                !plan
                    .iter()
                    .any(|l| l.contains(&format!("Seq Scan on {table}"))),
                "{name} scans {table} whole:\n{}",
                plan.join("\n")
            );
        }
        // An index scan without a condition reads the whole index: a scan in disguise.
        for (i, line) in plan.iter().enumerate() {
            if line.contains("Index Scan") || line.contains("Index Only Scan") {
                let cond = plan[i + 1..]
                    .iter()
                    .take_while(|l| !l.contains("->"))
                    .any(|l| l.contains("Index Cond"));
                assert!(
                    cond,
                    "{name}: {line} has no index condition:\n{}",
                    plan.join("\n")
                );
            }
        }
        exec(&conn, "DEALLOCATE s").await;
    }
}

/// What the confirmation writes before its commit, so that its plan is the one of a
/// statement: a flow's last link (`confirm.sql`), or a change's first (`confirm_current.sql`).
#[derive(Clone, Copy, Debug)]
enum Step {
    Last,
    Current,
}

/// One value a query answers.
async fn value<T: sea_orm::TryGetable>(conn: &DatabaseConnection, sql: &str) -> T {
    conn.query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{sql}: no row"))
        .try_get_by_index::<T>(0)
        .unwrap()
}

/// The token guard of each confirmation statement: the token stops being live after the
/// read (the user's row unchanged), so the commit is contended and writes nothing.
async fn a_token_no_longer_live_fails(step: Step) {
    let db = fresh_database(Backend::Postgres).await;
    let store = emailverify::store::Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    let conn = Database::connect(&db.url).await.unwrap();
    let (kind, first) = match step {
        Step::Last => ("verify", "confirm_new"),
        Step::Current => ("change", "confirm_current"),
    };
    exec(
        &conn,
        &format!(
            "INSERT INTO users (user_id, email, email_key, email_verified, created_at, updated_at) \
               VALUES ('u1', 'a@example.com', 'a@example.com', false, 1, 1); \
             INSERT INTO flows (flow_id, user_id, kind, step, state, new_email, locale, expires_at, \
               resend_available_at, created_at, updated_at, failed_codes) \
               VALUES ('f1', 'u1', '{kind}', '{first}', 'pending', 'a@example.com', 'en', \
                 999999, 0, 1, 1, 0); \
             INSERT INTO tokens (digest, flow_id, step, state, expires_at, created_at) \
               VALUES ('d1', 'f1', '{first}', 'live', 999999, 1)"
        ),
    )
    .await;

    let tx = store.begin_optimistic().await.unwrap();
    assert!(tx.is_optimistic());
    let (token, mut flow) = tx
        .token_with_flow(&[TokenDigest("d1".to_owned())])
        .await
        .unwrap()
        .expect("the token is found");
    assert_eq!(token.digest, "d1");
    let u1 = UserId::parse("u1").unwrap();
    let consuming = tx
        .lock_user_consuming(&u1, &TokenDigest("d1".to_owned()), 2)
        .await
        .unwrap();
    assert!(
        matches!(
            consuming,
            Consuming::Consumed {
                read_flow_again: false,
                ..
            }
        ),
        "an optimistic consumption answers at commit"
    );
    flow.updated_at = 2;
    match step {
        // A sign-up's link: the flow completed, the address verified.
        Step::Last => {
            flow.state = emailverify::domain::FlowState::Completed;
            tx.queue_flow_update(&flow).await.unwrap();
            tx.set_verified_email(&u1, &EmailAddress::parse("a@example.com").unwrap(), 2)
                .await
                .unwrap();
        }
        // A change's first link: the flow moved on, the second link.
        Step::Current => {
            flow.step = FlowStep::ConfirmNew;
            tx.queue_flow_update(&flow).await.unwrap();
            tx.insert_token(NewToken {
                digest: &TokenDigest("d2".to_owned()),
                flow_id: &flow.id(),
                step: FlowStep::ConfirmNew,
                expires_at: 999999,
                code_digest: "c2",
                now: 2,
            })
            .await
            .unwrap();
        }
    }

    // Meanwhile the token stops being live, without the user's row changing.
    exec(
        &conn,
        "UPDATE tokens SET state = 'superseded' WHERE digest = 'd1'",
    )
    .await;

    let e = tx.commit().await.unwrap_err();
    assert_eq!(e.contended_needs_lock(), Some(false), "{step:?}: {e:?}");
    let verified: bool = value(
        &conn,
        "SELECT email_verified FROM users WHERE user_id = 'u1'",
    )
    .await;
    assert!(!verified, "{step:?}: the address was not verified");
    let moved: String = value(
        &conn,
        "SELECT state || ' ' || step FROM flows WHERE flow_id = 'f1'",
    )
    .await;
    assert_eq!(
        moved,
        format!("pending {first}"),
        "{step:?}: the flow did not move"
    );
    let tokens: i64 = value(&conn, "SELECT count(*) FROM tokens").await;
    assert_eq!(tokens, 1, "{step:?}: no second link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_stopped_being_live_after_the_read_fails_either_confirmation() {
    if !postgres_available().await {
        return;
    }
    a_token_no_longer_live_fails(Step::Last).await;
    a_token_no_longer_live_fails(Step::Current).await;
}

/// The mail worker's own pool (`Store::dedicated`) runs its statements on generic plans
/// from the first execution; the request pool leaves the choice to PostgreSQL. (Left to
/// PostgreSQL, the worker's claim was planned anew at nearly every execution in some
/// runs: docs/benchmarks-history.md, "The worker's plans".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mail_worker_s_sessions_plan_generically() {
    if !postgres_available().await {
        return;
    }
    let db = fresh_database(Backend::Postgres).await;
    let store = emailverify::store::Store::connect(&db.url).await.unwrap();
    assert_eq!(
        store.plan_cache_mode().await.unwrap().as_deref(),
        Some("auto")
    );
    let worker = store.dedicated(&db.url, 3).await.unwrap();
    // Several at once, so that more than one of the pool's connections answers.
    let modes = futures::future::join_all((0..6).map(|_| worker.plan_cache_mode())).await;
    for mode in modes {
        assert_eq!(mode.unwrap().as_deref(), Some("force_generic_plan"));
    }
}

/// The mail worker's claim, planned as the worker's sessions plan it (generically), over
/// an outbox that keeps many sent mails: it takes the due mails by the due-mail index and
/// finds them again by the primary key, not by reading the whole outbox. The same claim
/// with its batch as a placeholder, planned the same way, does read the whole outbox:
/// that is what `store::claim_sql` writes the batch in against, and it shows that this
/// outbox is large enough for the difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mail_worker_s_claim_finds_its_mails_by_index_in_a_large_outbox() {
    if !postgres_available().await {
        return;
    }
    let (_db, conn) = one_session().await;
    for (state, rows) in [("sent", 100_000), ("pending", 50)] {
        exec(
            &conn,
            &format!(
                "INSERT INTO outbox (mail_id, user_id, template, recipient, locale, params, \
                   state, attempts, next_attempt_at, created_at) \
                 SELECT '{state}-' || i, 'u', 'verify_link', 'x@example.com', 'en', '{{}}', \
                   '{state}', 0, i, i FROM generate_series(1, {rows}) i"
            ),
        )
        .await;
    }
    exec(&conn, "ANALYZE outbox").await;
    exec(&conn, "SET plan_cache_mode = force_generic_plan").await;
    let claim = claim_sql(DbBackend::Postgres, MAILS_PER_ROUND);
    exec(&conn, &format!("PREPARE claim AS {claim}")).await;
    let plan = plan_of(&conn, "EXECUTE claim(1, 'w', 'pending', 100)").await;
    println!("-- the claim\n{}", plan.join("\n"));
    assert!(
        !plan.iter().any(|l| l.contains("Seq Scan on outbox")),
        "the claim reads the whole outbox:\n{}",
        plan.join("\n")
    );
    for index in ["outbox_due_idx", "outbox_pkey"] {
        assert!(
            plan.iter()
                .any(|l| l.contains(&format!("Index Scan using {index}"))),
            "the claim does not use {index}:\n{}",
            plan.join("\n")
        );
    }
    let placeholder = claim.replace(&format!("LIMIT {MAILS_PER_ROUND} "), "LIMIT $5 ");
    assert_ne!(placeholder, claim);
    exec(&conn, &format!("PREPARE placeholder AS {placeholder}")).await;
    let plan = plan_of(&conn, "EXECUTE placeholder(1, 'w', 'pending', 100, 32)").await;
    assert!(
        plan.iter().any(|l| l.contains("Seq Scan on outbox")),
        "with the batch as a placeholder the claim no longer reads the whole outbox, so \
         this outbox no longer shows what writing the batch in prevents:\n{}",
        plan.join("\n")
    );
}
