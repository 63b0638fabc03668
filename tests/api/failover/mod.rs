//! The database fails over (docs/database.md): a primary with a synchronous standby, the
//! service in front through a proxy the failover moves, a load of sign-ups and
//! confirmations, `kill -9` of the primary, promotion of the standby. Nothing the service
//! acknowledged is lost, the switch answers UNAVAILABLE only (and health NOT_SERVING), the
//! feed has no gap, the feed's publisher to NATS and retention resume on their own, and
//! the old primary comes back as a standby that nothing writes to. Beside it, the
//! neighbouring fault: a server with few connection slots makes requests wait, not fail
//! (`slots`), and a primary fenced read-only under the pool's open sessions while a new
//! one takes over (`fenced`).

mod fenced;
mod load;
mod slots;
mod tasks;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

use crate::helpers::nats::Nats;
use crate::helpers::pair::{Pair, Proxy};
use crate::helpers::postgres::skip_postgres_case;
use crate::helpers::{TestApp, TestDb, eventually, start, test_settings};
use load::Seen;

/// The sign-up sent once the standby is promoted: the first request that must succeed.
const AFTER: &str = "after-promotion";

fn db_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/ev")
}

async fn strings(db: &DatabaseConnection, sql: &str) -> Vec<String> {
    db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect()
}

async fn one_bool(db: &DatabaseConnection, sql: &str) -> bool {
    db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap()
}

/// "1.2 s after", or "(no NATS)".
fn secs_after(d: Option<Duration>) -> String {
    d.map_or("(no NATS)".into(), |d| {
        format!("{:.1} s after", d.as_secs_f64())
    })
}

/// Whether `/readyz` answers 200 and gRPC health says SERVING.
async fn ready(app: &TestApp) -> (bool, bool) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let http = app.get("/readyz").await.status() == 200;
    let grpc = HealthClient::new(app.channel().await)
        .check(HealthCheckRequest {
            service: emailverify::startup::SERVICE_NAME.into(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == 1);
    (http, grpc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_load_loses_nothing_acknowledged_and_the_old_primary_rejoins_as_a_standby()
{
    // Without nats-server (and not under CI=true), the rest runs without the publisher.
    let nats_bin = crate::helpers::nats::binary("the failover test's NATS publisher");
    let mut pair = match tokio::task::spawn_blocking(Pair::start).await.unwrap() {
        Ok(pair) => pair,
        Err(why) => return skip_postgres_case(&format!("no private PostgreSQL pair: {why}")),
    };
    {
        let admin = Database::connect(pair.primary.url()).await.unwrap();
        admin
            .execute_unprepared("CREATE DATABASE ev")
            .await
            .unwrap();
        // pg_rewind reads the old primary's WAL back to the last common checkpoint; the
        // crash recovery it runs first (with the settings on file, not the command line's)
        // must not recycle it.
        for sql in [
            "ALTER SYSTEM SET wal_keep_size = '1GB'",
            "SELECT pg_reload_conf()",
        ] {
            admin.execute_unprepared(sql).await.unwrap();
        }
        let sync = strings(&admin, "SELECT sync_state::text FROM pg_stat_replication").await;
        assert_eq!(sync, ["sync"], "the standby streams synchronously");
        admin.close().await.unwrap();
    }
    let nats = match &nats_bin {
        Some(bin) => Some(Nats::start(bin).await),
        None => None,
    };
    let nats_url = nats.as_ref().map(|n| n.url.clone());
    let proxy = Proxy::start(pair.primary.port()).await;
    let smtp = crate::helpers::SmtpSink::start().await;
    let mut settings = test_settings(&TestDb::at(proxy.url("ev")), &smtp);
    settings.limit_per_user = "1000/1h".into();
    // A short lease, so that the mails sent and not marked at the kill go again within the
    // test; not shorter: a round renews its claims every third of the lease, and on a
    // loaded machine just after the promotion a renewal can be more than a second late
    // (with 2 s, one full-suite run sent 115 duplicates; most likely claims ran out under
    // rounds still sending after the switch — not proven).
    settings.mail_lease = "10s".into();
    // The background tasks that must resume after the switch: the feed's publisher, and
    // retention with short settings (a sent mail goes 5 s after it was queued; a round
    // every half second).
    settings.events_nats_url = nats_url.clone();
    settings.retain_mail = "5s".into();
    settings.retention_every = "500ms".into();
    let app = start(
        TestDb::at(proxy.url("ev")),
        smtp.clone(),
        settings,
        Default::default(),
    )
    .await;
    assert_eq!(ready(&app).await, (true, true));

    let seen = Arc::new(Mutex::new(Seen::default()));
    let (stop_load, stop_rest) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let load = load::load(&app, seen.clone(), stop_load.clone());
    let confirmer = load::confirmer(&app, seen.clone(), stop_rest.clone());
    let watcher = load::watcher(&app, seen.clone(), stop_rest.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = seen.lock().unwrap().signed_up.len();

    // The primary's machine dies; the proxy, checking only that a server answers, moves
    // to the standby before it is promoted: the service must not call that ready.
    tokio::task::block_in_place(|| pair.primary.kill_9());
    let killed = Instant::now();
    proxy.repoint(Some(pair.standby.port()));
    eventually(
        "NOT_SERVING while no server takes writes",
        Duration::from_secs(15),
        async || (ready(&app).await == (false, false)).then_some(()),
    )
    .await;
    let not_ready_after = killed.elapsed();
    // And stays so while no server takes writes (health is asked every second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ready(&app).await,
        (false, false),
        "NOT_SERVING until a server takes writes"
    );

    let promoted = Instant::now();
    let published_again = match &nats_url {
        Some(url) => Some(tasks::publisher_watch(url, promoted).await),
        None => None,
    };
    let outcome = tokio::task::block_in_place(|| pair.standby.promote());
    assert_eq!(outcome, Ok(()), "the standby is promoted");
    let first_ok = eventually(
        "a request succeeds after the promotion",
        Duration::from_secs(30),
        async || {
            app.request_verification(AFTER, "after@example.com")
                .await
                .ok()
                .map(|_| promoted.elapsed())
        },
    )
    .await;
    let new = Database::connect(db_url(pair.standby.port()))
        .await
        .unwrap();
    tasks::mail_is_queued(&new, AFTER).await;
    eventually("SERVING again", Duration::from_secs(15), async || {
        (ready(&app).await == (true, true)).then_some(())
    })
    .await;
    let serving_after = promoted.elapsed();
    // The publisher and retention resume on their own while the load goes on.
    let published_after = match &nats_url {
        Some(url) => Some(tasks::publisher_resumed(url, &new, AFTER, promoted).await),
        None => None,
    };
    let pruned_after = tasks::retention_resumed(&new, AFTER, promoted).await;
    let published_again = match published_again {
        Some(task) => Some(task.await.unwrap().expect("the publisher publishes again")),
        None => None,
    };
    stop_load.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    // Every acknowledged sign-up's mail arrives (and the confirmer confirms it).
    let wanted: HashSet<String> = {
        let seen = seen.lock().unwrap();
        seen.signed_up
            .keys()
            .map(|i| format!("u{i}@example.com"))
            .collect()
    };
    eventually(
        "every acknowledged sign-up's mail arrives",
        Duration::from_secs(90),
        async || {
            let seen = seen.lock().unwrap();
            let got: HashSet<&String> = seen.mails.values().map(|(to, _)| to).collect();
            wanted.iter().all(|w| got.contains(w)).then_some(())
        },
    )
    .await;
    // The feed as read across the switch is the feed on the new primary, event for event:
    // the watcher reads every event there was once the load ended, and what it read is,
    // in order, the start of the events table as it is after the watcher stopped (mails
    // and confirmations may still add events meanwhile).
    const FEED: &str = "SELECT user_id || ' ' || event_type FROM events ORDER BY feed_tx, event_id";
    let at_the_end_of_the_load = strings(&new, FEED).await.len();
    eventually(
        "the watcher reads the whole feed",
        Duration::from_secs(30),
        async || (seen.lock().unwrap().feed.len() >= at_the_end_of_the_load).then_some(()),
    )
    .await;
    stop_rest.store(true, Ordering::Relaxed);
    confirmer.await.unwrap();
    watcher.await.unwrap();
    let table = strings(&new, FEED).await;

    // Every task that wrote to it has ended.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let flows: HashSet<String> = strings(&new, "SELECT flow_id FROM flows")
        .await
        .into_iter()
        .collect();
    let verified: HashSet<String> = strings(&new, "SELECT email FROM users WHERE email_verified")
        .await
        .into_iter()
        .collect();
    let duplicates: u32 = seen.mails.values().map(|(_, n)| n - 1).sum();
    eprintln!(
        "FAILOVER FIGURES: {} sign-ups OK ({before_kill} before the kill), {} confirmations OK, \
         {} UNAVAILABLE, {} other; NOT_SERVING {:.1} s after the kill; first request OK \
         {:.2} s after `pg_ctl promote` began, SERVING again after {:.1} s; {} mails, {duplicates} \
         duplicate(s); feed {} events; the publisher published again {} and had published \
         the first event committed after the promotion {}; retention had deleted a mail \
         queued after it {:.1} s after (retained 5 s)",
        seen.signed_up.len(),
        seen.confirmed.len(),
        seen.unavailable,
        seen.wrong.len(),
        not_ready_after.as_secs_f64(),
        first_ok.as_secs_f64(),
        serving_after.as_secs_f64(),
        seen.mails.len(),
        table.len(),
        secs_after(published_again),
        secs_after(published_after),
        pruned_after.as_secs_f64(),
    );
    assert!(
        seen.wrong.is_empty(),
        "answers other than OK and UNAVAILABLE: {:?}",
        seen.wrong
    );
    assert!(
        seen.signed_up.len() > before_kill,
        "sign-ups succeed after the failover"
    );
    let lost: Vec<_> = seen
        .signed_up
        .values()
        .filter(|f| !flows.contains(*f))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged sign-ups missing on the new primary: {lost:?}"
    );
    let unconfirmed: Vec<_> = seen
        .confirmed
        .iter()
        .filter(|u| !verified.contains(*u))
        .collect();
    assert!(
        unconfirmed.is_empty(),
        "acknowledged confirmations missing: {unconfirmed:?}"
    );
    let bound = emailverify::mail::outbox::UNMARKED_AT_MOST as u32;
    assert!(
        duplicates <= bound,
        "{duplicates} duplicate mails, more than {bound}"
    );
    let read: Vec<String> = seen
        .feed
        .iter()
        .map(|(_, u, t)| format!("{u} {t}"))
        .collect();
    assert!(
        read.len() >= at_the_end_of_the_load && table.starts_with(&read),
        "the feed read across the switch ({} events) is the start of the new primary's ({}), \
         gap-free",
        read.len(),
        table.len()
    );
    let cursors: HashSet<&String> = seen.feed.iter().map(|e| &e.0).collect();
    assert_eq!(cursors.len(), seen.feed.len(), "no event twice");
    drop(seen);

    // The old primary comes back as a standby of the new one; the service keeps writing
    // to the new primary and nothing writes to the old one.
    // pg_rewind reads the source's timeline from its control file, which a promoted
    // server updates at its first checkpoint (PostgreSQL's docs say so): take it now.
    new.execute_unprepared("CHECKPOINT").await.unwrap();
    let rejoined = tokio::task::block_in_place(|| pair.primary.rejoin_as_standby_of(&pair.standby));
    assert_eq!(rejoined, Ok(()), "pg_rewind and restart as a standby");
    for i in 0..20 {
        app.request_verification(&format!("later-{i}"), &format!("later{i}@example.com"))
            .await
            .expect("the service writes to the new primary");
    }
    let old = Database::connect(db_url(pair.primary.port()))
        .await
        .unwrap();
    assert!(
        one_bool(&old, "SELECT pg_is_in_recovery()").await,
        "the old primary is a standby"
    );
    let on_new: HashSet<String> = strings(&new, "SELECT flow_id FROM flows")
        .await
        .into_iter()
        .collect();
    let caught_up = crate::helpers::poll_until(Duration::from_secs(30), async || {
        let on_old: HashSet<String> = strings(&old, "SELECT flow_id FROM flows")
            .await
            .into_iter()
            .collect();
        on_new.is_subset(&on_old).then_some(())
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the old primary catches up within 30 s; its log:\n{}",
        pair.primary.log_tail(30)
    );
    let on_old: HashSet<String> = strings(&old, "SELECT flow_id FROM flows")
        .await
        .into_iter()
        .collect();
    let on_new: HashSet<String> = strings(&new, "SELECT flow_id FROM flows")
        .await
        .into_iter()
        .collect();
    let extra: Vec<_> = on_old.difference(&on_new).collect();
    assert!(
        extra.is_empty(),
        "rows on the old primary the new one lacks: {extra:?}"
    );
    assert_eq!(ready(&app).await, (true, true));

    // What the publisher put in the stream across both switches is the new primary's feed.
    if let Some(url) = &nats_url {
        let messages = tasks::assert_the_stream_is_the_table(url, &new).await;
        eprintln!("FAILOVER NATS: {messages} messages, each event once, in feed order");
    }
}
