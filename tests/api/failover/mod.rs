//! The database fails over (docs/database.md): a primary with a synchronous standby, the
//! service in front through a proxy the failover moves, a load of sign-ups and
//! confirmations, `kill -9` of the primary, promotion of the standby. Nothing the service
//! acknowledged is lost, the switch answers UNAVAILABLE only, the feed has no gap, and the
//! old primary comes back as a standby that nothing writes to. Beside it, the neighbouring
//! fault: a server with few connection slots makes requests wait, not fail.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use emailverify::grpc::pb;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use tonic::Code;

use crate::helpers::pair::{Pair, Proxy};
use crate::helpers::postgres::{PrivatePostgres, skip_postgres_case};
use crate::helpers::{TestApp, TestDb, eventually, sign_up, start, test_settings};

/// Sign-ups under way at once.
const CONCURRENCY: usize = 16;
/// The most sign-ups one run sends (the load stops earlier, on time).
const MOST: usize = 20_000;

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

/// What the load saw.
#[derive(Default)]
struct Seen {
    /// Sign-up `i` answered OK with this flow.
    signed_up: HashMap<usize, String>,
    /// Addresses whose confirmation answered OK.
    confirmed: HashSet<String>,
    unavailable: usize,
    /// Any answer other than OK and UNAVAILABLE.
    wrong: Vec<String>,
    /// Mails by Message-ID: recipient, deliveries.
    mails: HashMap<String, (String, u32)>,
    /// The feed as a watcher read it across the switch: (cursor, user, type).
    feed: Vec<(String, String, String)>,
}

fn answer(seen: &Mutex<Seen>, what: &str, s: tonic::Status) {
    let mut seen = seen.lock().unwrap();
    if s.code() == Code::Unavailable {
        seen.unavailable += 1;
    } else {
        seen.wrong
            .push(format!("{what}: {:?} {}", s.code(), s.message()));
    }
}

/// Sign-ups, `CONCURRENCY` at a time, until `stop` (bounded by `MOST` and two minutes).
fn load(
    app: &TestApp,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    (0..CONCURRENCY)
        .map(|_| {
            let (grpc, seen, stop, next) =
                (app.grpc.clone(), seen.clone(), stop.clone(), next.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120)
                {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= MOST {
                        break;
                    }
                    match grpc.clone().request_verification(sign_up(i)).await {
                        Ok(r) => {
                            let flow = r.into_inner().flow.map(|f| f.flow_id).unwrap_or_default();
                            seen.lock().unwrap().signed_up.insert(i, flow);
                        }
                        Err(s) => answer(&seen, &format!("sign-up {i}"), s),
                    }
                }
            })
        })
        .collect()
}

/// Takes the mails as they come and confirms the first of each recipient, until `stop`
/// and a quiet second (bounded by three minutes).
fn confirmer(
    app: &TestApp,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let (smtp, grpc, base) = (app.smtp.clone(), app.grpc.clone(), app.http_base.clone());
    let started = Instant::now();
    tokio::spawn(async move {
        while started.elapsed() < Duration::from_secs(180) {
            let Some(mail) = smtp.next_within(Duration::from_secs(1)).await else {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            };
            let to = mail.to.join(",");
            let first = {
                let mut seen = seen.lock().unwrap();
                let entry = seen
                    .mails
                    .entry(mail.message_id.clone())
                    .or_insert((to.clone(), 0));
                entry.1 += 1;
                entry.1 == 1
            };
            if !first || stop.load(Ordering::Relaxed) {
                continue;
            }
            let token = mail.token(&base);
            match grpc
                .clone()
                .confirm_link(pb::ConfirmLinkRequest { token })
                .await
            {
                Ok(_) => {
                    seen.lock().unwrap().confirmed.insert(to);
                }
                Err(s) => answer(&seen, &format!("confirm {to}"), s),
            }
        }
    })
}

/// Watches the feed from the beginning, resuming after the last cursor it read whenever
/// the stream breaks, until `stop` (bounded by three minutes).
fn watcher(
    app: &TestApp,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let grpc = app.grpc.clone();
    let started = Instant::now();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(180) {
            let after = seen
                .lock()
                .unwrap()
                .feed
                .last()
                .map(|e| e.0.clone())
                .unwrap_or_default();
            let req = pb::WatchEventsRequest {
                from_beginning: after.is_empty(),
                after,
                types: vec![],
            };
            if let Ok(stream) = grpc.clone().watch_events(req).await {
                let mut stream = stream.into_inner();
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                        Ok(Ok(Some(e))) => {
                            let kind = e.event.map(|e| e.r#type).unwrap_or_default();
                            seen.lock().unwrap().feed.push((e.cursor, e.user_id, kind));
                        }
                        Ok(_) => break,
                        Err(_) => continue,
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
    let proxy = Proxy::start(pair.primary.port()).await;
    let smtp = crate::helpers::SmtpSink::start().await;
    let mut settings = test_settings(&TestDb::at(proxy.url("ev")), &smtp);
    settings.limit_per_user = "1000/1h".into();
    settings.mail_lease = "2s".into();
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
    let load = load(&app, seen.clone(), stop_load.clone());
    let confirmer = confirmer(&app, seen.clone(), stop_rest.clone());
    let watcher = watcher(&app, seen.clone(), stop_rest.clone());
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

    let promoted = Instant::now();
    let outcome = tokio::task::block_in_place(|| pair.standby.promote());
    assert_eq!(outcome, Ok(()), "the standby is promoted");
    let first_ok = eventually(
        "a request succeeds after the promotion",
        Duration::from_secs(30),
        async || {
            app.request_verification("after-promotion", "after@example.com")
                .await
                .ok()
                .map(|_| promoted.elapsed())
        },
    )
    .await;
    eventually("SERVING again", Duration::from_secs(15), async || {
        (ready(&app).await == (true, true)).then_some(())
    })
    .await;
    let serving_after = promoted.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_load.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    // Every acknowledged sign-up's mail arrives (and the confirmer confirms it).
    let new = Database::connect(db_url(pair.standby.port()))
        .await
        .unwrap();
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
         duplicate(s); feed {} events",
        seen.signed_up.len(),
        seen.confirmed.len(),
        seen.unavailable,
        seen.wrong.len(),
        not_ready_after.as_secs_f64(),
        first_ok.as_secs_f64(),
        serving_after.as_secs_f64(),
        seen.mails.len(),
        table.len()
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
}

/// SQLSTATE 53300 as back-pressure: a server with 17 connection slots (two held by another
/// program), a service asked for a pool of 32, 2,000 sign-ups 64 at a time: the pool is
/// sized to the server's room and every sign-up waits for a pooled connection instead of
/// failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_few_connection_slots_makes_requests_wait_not_fail() {
    let pg = match tokio::task::spawn_blocking(|| {
        PrivatePostgres::start_with(&[], "-c max_connections=17")
    })
    .await
    .unwrap()
    {
        Ok(pg) => pg,
        Err(why) => return skip_postgres_case(&format!("no private PostgreSQL: {why}")),
    };
    let other = {
        let mut opts = sea_orm::ConnectOptions::new(pg.url());
        opts.max_connections(2).min_connections(2);
        Database::connect(opts).await.unwrap()
    };
    other.execute_unprepared("SELECT 1").await.unwrap();
    let smtp = crate::helpers::SmtpSink::start().await;
    let mut settings = test_settings(&TestDb::at(pg.url()), &smtp);
    settings.db_pool = "32".into();
    let app = start(TestDb::at(pg.url()), smtp, settings, Default::default()).await;

    use futures::StreamExt;
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..2000)
        .map(|i| {
            let mut grpc = app.grpc.clone();
            async move { grpc.request_verification(sign_up(i)).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.as_ref()
                .err()
                .map(|s| format!("{:?} {}", s.code(), s.message()))
        })
        .collect();
    eprintln!(
        "53300 FIGURES: 2000 sign-ups at c=64 against max_connections=17: {} failed, {:.1} s",
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{} of 2000 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    other.close().await.unwrap();
}
