//! Connections that never finish or never end (API.md, "Edges and operations, refined"):
//! half-open connections on both ports, idle connections, calls per gRPC connection, and a
//! full file-descriptor table. The service keeps answering those that get in.
//!
//! And one host against the rest (API.md, Release 3, "The feed and streams cost one query"):
//! held streams and half-open floods from one peer address are refused past its bound
//! while other addresses are served; people sharing one address (carrier NAT) and a
//! trusted proxy are not. Loopback has all of 127.0.0.0/8: the tests' other peers are
//! 127.0.0.2 and 127.0.1.x, their sockets bound there. These tests run on SQLite only: what
//! they test is above the database.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use emailverify::domain::Keyring;
use emailverify::grpc::pb;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::process::{serve, serve_with};
use crate::helpers::{
    Backend, Service, SmtpSink, eventually, fresh_database, metric, poll_until, spawn_app_with,
};

/// The tests that hold thousands of connections run one at a time: together (with the
/// rest of the suite) they could fill the process's file-descriptor table.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Half-open connections per port: more than the default cap (1024), so some wait in the
/// kernel's queue as they would in an attack.
const HELD: usize = 2_000;

/// Raises this process's soft open-files limit to `wanted` (at most the hard limit).
fn open_files_at_least(wanted: u64) {
    let got = rlimit::increase_nofile_limit(wanted).expect("read the open-files limit");
    assert!(
        got >= wanted,
        "this test needs {wanted} open files; the hard limit is {got} (raise it: ulimit -Hn)"
    );
}

/// The attacker's own address (the tests' default peer).
const ATTACKER: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Someone else.
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// 64 addresses (127.0.1.1–64) for attacks that come from many hosts, so that what they
/// meet is the port's cap and deadlines, not the bound per peer.
fn many_hosts() -> Vec<Ipv4Addr> {
    (1..=64).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect()
}

/// A TCP connection to `to` from the address `from` (its socket bound there first).
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// Whether the service closes `s` within `within` (what it says first is read and dropped).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 1024];
    for _ in 0..64 {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// `GET /healthz` on a kept-alive connection: the answer's head and body ("ok").
async fn healthz_on(s: &mut TcpStream) -> Result<String, String> {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("\r\n\r\nok") && got.len() < 64 * 1024 {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&got))),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Err(_) => return Err("no answer within 5 s".into()),
        }
    }
    Ok(String::from_utf8_lossy(&got).into_owned())
}

/// `/healthz` asked as a person at `from` would: a browser's fresh connection. How long the
/// answer took, or why there was none (within 5 s).
async fn healthz_from(from: Ipv4Addr, base: &str) -> Result<Duration, String> {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::V4(from))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let asked = Instant::now();
    let resp = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
    if status != 200 || body != "ok" {
        return Err(format!("{status}: {body}"));
    }
    Ok(asked.elapsed())
}

/// A gRPC channel from `from` (its socket bound there: tonic's `Endpoint::local_address`).
async fn channel_from(
    from: Ipv4Addr,
    to: SocketAddr,
    within: Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{to}"))
        .unwrap()
        .local_address(Some(IpAddr::V4(from)))
        .connect_timeout(within)
        .timeout(within)
        .connect()
        .await
}

/// The value of a counter on the admin port (0 if not exported).
async fn counter(app: &Service, series: &str) -> f64 {
    metric(&app.metrics().await, series).unwrap_or(0.0)
}

const REFUSED_GRPC: &str =
    r#"emailverify_connections_refused_total{port="grpc",reason="per_peer"}"#;
const REFUSED_HTTP: &str =
    r#"emailverify_connections_refused_total{port="http",reason="per_peer"}"#;

/// Opens `n` connections to `addr`, from the addresses `from` in turn, and sends each
/// `first` (maybe nothing), never more. The task returned waits (at most `within` from the
/// first connect) for the service to close each one, and gives how long the last one took,
/// or panics naming how many were still open.
async fn hold_until_closed(
    addr: SocketAddr,
    from: &[Ipv4Addr],
    n: usize,
    first: &'static [u8],
    within: Duration,
) -> tokio::task::JoinHandle<Duration> {
    let started = Instant::now();
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = tokio::time::timeout(
            Duration::from_secs(10),
            connect_from(from[i % from.len()], addr),
        )
        .await
        .expect("connect within 10 s")
        .expect("connect");
        if !first.is_empty() {
            // A connection the service refused may be closed before this is written.
            let _ = s.write_all(first).await;
        }
        streams.push(s);
    }
    tokio::spawn(async move {
        let closed: Vec<Option<Duration>> = futures::stream::iter(streams)
            .map(|mut s| async move {
                let deadline = tokio::time::Instant::from_std(started + within);
                let mut buf = [0u8; 1024];
                // Whatever the service says before it closes (its HTTP/2 settings, a 408) is
                // read and dropped; bounded by the deadline and by 64 reads.
                for _ in 0..64 {
                    match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                        Ok(Ok(_)) => continue,
                        Err(_) => return None,
                    }
                }
                None
            })
            .buffer_unordered(n)
            .collect()
            .await;
        let open = closed.iter().filter(|c| c.is_none()).count();
        assert_eq!(
            open, 0,
            "{open} of {n} connections to {addr} still open after {within:?}"
        );
        closed.into_iter().flatten().max().unwrap_or_default()
    })
}

async fn half_open_connections_are_dropped_and_the_service_keeps_answering(backend: Backend) {
    let _one_at_a_time = HEAVY.lock().await;
    // Both ends of 2 × HELD connections live in this process, plus the service's own.
    open_files_at_least(4 * HELD as u64 + 1024);
    let app = spawn_app_with(backend, |s| s.header_timeout = "1s".into()).await;
    let http_addr: SocketAddr = app.http_base.trim_start_matches("http://").parse().unwrap();
    let deadline = Duration::from_secs(10);

    // Half send nothing; half start and never finish: the HTTP/2 preface's first line, an
    // HTTP request line and one header.
    // From many hosts: each stays within its own bound, together they pass the port's cap.
    let hosts = many_hosts();
    let held = [
        hold_until_closed(app.grpc_addr, &hosts, HELD / 2, b"", deadline).await,
        hold_until_closed(
            app.grpc_addr,
            &hosts,
            HELD / 2,
            b"PRI * HTTP/2.0\r\n",
            deadline,
        )
        .await,
        hold_until_closed(http_addr, &hosts, HELD / 2, b"", deadline).await,
        hold_until_closed(
            http_addr,
            &hosts,
            HELD / 2,
            b"POST /verify HTTP/1.1\r\nHost: x\r\n",
            deadline,
        )
        .await,
    ];

    // Meanwhile, people who ask get answers: liveness, gRPC health, a sign-up — each on a
    // connection of its own, which waits its turn at most a header timeout or two.
    let asked = Instant::now();
    let fresh = reqwest::Client::builder()
        .local_address(IpAddr::V4(OTHER))
        .timeout(Duration::from_secs(8))
        .build()
        .unwrap();
    let healthz = fresh
        .get(format!("{}/healthz", app.http_base))
        .send()
        .await
        .expect("/healthz answers during the attack");
    assert_eq!(healthz.status(), 200);
    let channel = channel_from(OTHER, app.grpc_addr, Duration::from_secs(8))
        .await
        .expect("a gRPC connection gets in during the attack");
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "emailverify.v1.EmailVerification".into(),
        })
        .await
        .expect("gRPC health answers during the attack");
    assert_eq!(health.into_inner().status, ServingStatus::Serving as i32);
    pb::EmailVerificationClient::new(channel)
        .request_verification(pb::RequestVerificationRequest {
            user_id: "user-1".into(),
            email: "jane@example.com".into(),
            locale: String::new(),
        })
        .await
        .expect("a sign-up is accepted during the attack");
    let answered = asked.elapsed();
    assert!(
        answered < Duration::from_secs(8),
        "answers took {answered:?}"
    );
    app.next_mail().await;

    // Every held connection was closed: the first ones at the header timeout (1 s here), the
    // ones that waited in the kernel's queue a timeout after they got in.
    for h in held {
        let last = h.await.expect("all held connections closed");
        assert!(last <= deadline, "the last one was closed after {last:?}");
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// The value of `emailverify_connections_open{port="<port>"}` on the admin port.
async fn open_connections(app: &Service, port: &str) -> f64 {
    metric(
        &app.metrics().await,
        &format!(r#"emailverify_connections_open{{port="{port}"}}"#),
    )
    .unwrap_or(0.0)
}

/// Idle connections close; one with a call in flight (a health Watch) stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_busy_ones_are_kept() {
    let db = fresh_database(Backend::Sqlite).await;
    let smtp = SmtpSink::start().await;
    let app = serve(
        &db.url,
        &smtp,
        &Keyring::generate_key_base64(),
        &[
            ("EMAILVERIFY_IDLE_TIMEOUT", "2s"),
            ("EMAILVERIFY_HEADER_TIMEOUT", "1s"),
        ],
    )
    .await;
    let within = Duration::from_secs(6);

    // A gRPC call, then nothing: the connection is closed, and the next call reconnects.
    app.status("nobody").await.unwrap_err();
    assert_eq!(open_connections(&app, "grpc").await, 1.0);
    eventually("the idle gRPC connection closed", within, async || {
        (open_connections(&app, "grpc").await == 0.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = app.status("nobody").await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::NotFound, "{again:?}");

    // A Watch stream is a call in flight for as long as it is open.
    let watcher = app.channel().await;
    let mut watch = HealthClient::new(watcher.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The other channel's connection went idle and was closed; the watcher's is open.
    assert_eq!(open_connections(&app, "grpc").await, 1.0);
    // Still open: nothing to say, or the status again (health repeats it every few
    // seconds), but no error and no end.
    match tokio::time::timeout(Duration::from_millis(200), watch.message()).await {
        Err(_) | Ok(Ok(Some(_))) => {}
        Ok(other) => panic!("the watch stream ended: {other:?}"),
    }
    drop(watch);
    eventually(
        "the watcher's connection closed once idle",
        within,
        async || (open_connections(&app, "grpc").await == 0.0).then_some(()),
    )
    .await;

    // HTTP: a kept-alive connection waiting for its next request closes after the header
    // timeout.
    let http_addr = app.http_base.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&http_addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let started = Instant::now();
    let closed = loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
        if got.len() > 64 * 1024 {
            break false;
        }
    };
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.contains("\r\n\r\nok"),
        "{got}"
    );
    assert!(
        closed,
        "the idle HTTP connection is still open after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(watcher);
    app.terminate().await;
}

/// One gRPC connection runs at most EMAILVERIFY_GRPC_MAX_STREAMS calls at once; the next
/// waits for one to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_grpc_connection_are_bounded() {
    let app = spawn_app_with(Backend::Sqlite, |s| s.grpc_max_streams = "2".into()).await;
    let channel = app.channel().await;
    let watch = || {
        let mut client = HealthClient::new(channel.clone());
        async move {
            client
                .watch(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let (first, _second) = (watch().await, watch().await);
    let check = || {
        let mut client = HealthClient::new(channel.clone());
        async move {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
        }
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(500), check())
            .await
            .is_err(),
        "a third call ran beside two open streams"
    );
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(5), check())
        .await
        .expect("the call runs once a stream is free")
        .unwrap();
    assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
}

/// With its file-descriptor table full the service says so at WARN, goes on answering on
/// the connections it has, and accepts again once descriptors are free (the held ones time
/// out). The binary runs under `prlimit` with a small table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_file_descriptor_table_is_logged_at_warn_and_survived() {
    if which("prlimit").is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "prlimit (util-linux) is missing"
        );
        eprintln!("SKIPPED: prlimit (util-linux) is not installed");
        return;
    }
    let db = fresh_database(Backend::Sqlite).await;
    let smtp = SmtpSink::start().await;
    let app = serve_with(
        &db.url,
        &smtp,
        &Keyring::generate_key_base64(),
        &[
            ("EMAILVERIFY_HEADER_TIMEOUT", "1s"),
            ("EMAILVERIFY_IDLE_TIMEOUT", "30s"),
        ],
        &["prlimit", "--nofile=96:96", "--"],
    )
    .await;
    // A connection that got in before.
    let channel = app.channel().await;
    let mut health = HealthClient::new(channel);
    let ask = HealthCheckRequest {
        service: String::new(),
    };
    health.check(ask.clone()).await.unwrap();

    // More silent connections than the table holds (from many hosts: no one's bound is
    // reached).
    let held = hold_until_closed(
        app.grpc_addr,
        &many_hosts(),
        200,
        b"",
        Duration::from_secs(20),
    )
    .await;
    let logs_say_full = || app.logs().contains("file-descriptor table is full");
    eventually(
        "the full table is logged",
        Duration::from_secs(10),
        async || logs_say_full().then_some(()),
    )
    .await;
    let warned = app.logs();
    let line = warned
        .lines()
        .find(|l| l.contains("file-descriptor table is full"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    // The connection that got in is still answered.
    let answer = tokio::time::timeout(Duration::from_secs(5), health.check(ask.clone()))
        .await
        .expect("answered while the table is full")
        .unwrap();
    assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
    // The held connections time out, descriptors come back, new connections get in.
    held.await.expect("all held connections closed");
    eventually(
        "a new connection gets in",
        Duration::from_secs(10),
        async || {
            let resp = app
                .http
                .get(format!("{}/healthz", app.http_base))
                .send()
                .await
                .ok()?;
            (resp.status() == 200).then_some(())
        },
    )
    .await;
    let page = app.metrics().await;
    let exhausted = metric(
        &page,
        r#"emailverify_accept_errors_total{port="grpc",kind="fd_exhausted"}"#,
    )
    .unwrap_or(0.0);
    assert!(exhausted >= 1.0, "{page}");
    let (status, _) = app.terminate().await;
    assert!(status.success());
}

/// Health `Watch` streams held from one address on 1,030 connections (past the port's
/// default cap of 1,024) used to keep every other gRPC client out for as long as they
/// stayed (a stream keeps its connection from going idle). Now that address gets its 64
/// (EMAILVERIFY_MAX_CONNECTIONS_PER_PEER), the rest are refused at once and counted, and a
/// client from another address is served while the 64 streams stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_held_from_one_address_do_not_lock_others_out() {
    const WATCHERS: usize = 1_030;
    let _one_at_a_time = HEAVY.lock().await;
    open_files_at_least(2 * WATCHERS as u64 + 1024);
    let db = fresh_database(Backend::Sqlite).await;
    let smtp = SmtpSink::start().await;
    let app = serve(&db.url, &smtp, &Keyring::generate_key_base64(), &[]).await;
    let grpc = app.grpc_addr;

    let opened = Instant::now();
    let within = Duration::from_secs(10);
    let watches: Vec<_> = futures::stream::iter(0..WATCHERS)
        .map(|_| async move {
            let channel = Endpoint::from_shared(format!("http://{grpc}"))
                .unwrap()
                .local_address(Some(IpAddr::V4(ATTACKER)))
                .connect_timeout(within)
                .connect()
                .await
                .ok()?;
            let request = HealthCheckRequest {
                service: String::new(),
            };
            let mut health = HealthClient::new(channel.clone());
            let mut watch = tokio::time::timeout(within, health.watch(request))
                .await
                .ok()?
                .ok()?
                .into_inner();
            let first = tokio::time::timeout(within, watch.message())
                .await
                .ok()?
                .ok()??;
            // The channel is kept with its stream: both stay open to the end.
            (first.status == ServingStatus::Serving as i32).then_some((channel, watch))
        })
        .buffer_unordered(64)
        .filter_map(|held| async { held })
        .collect()
        .await;
    let held = watches.len();
    eprintln!(
        "{held} of {WATCHERS} watch streams held from {ATTACKER} after {:?}",
        opened.elapsed()
    );

    // Someone else is served: gRPC health, and a sign-up.
    let asked = Instant::now();
    let channel = channel_from(OTHER, grpc, Duration::from_secs(5))
        .await
        .expect("a client from another address connects");
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "emailverify.v1.EmailVerification".into(),
        })
        .await
        .expect("gRPC health answers another address");
    assert_eq!(health.into_inner().status, ServingStatus::Serving as i32);
    pb::EmailVerificationClient::new(channel)
        .request_verification(pb::RequestVerificationRequest {
            user_id: "user-1".into(),
            email: "jane@example.com".into(),
            locale: String::new(),
        })
        .await
        .expect("a sign-up from another address is accepted");
    let answered = asked.elapsed();
    eprintln!("another address was answered in {answered:?}");
    assert!(answered < Duration::from_secs(5), "took {answered:?}");
    assert_eq!(
        held, 64,
        "one address holds EMAILVERIFY_MAX_CONNECTIONS_PER_PEER"
    );

    // The refusals are counted (each watcher left out at least once: tonic connects again
    // for the call after its first connection was closed); the streams that got in are
    // still open.
    let refused = counter(&app, REFUSED_GRPC).await;
    eprintln!("{refused} gRPC connections refused");
    assert!(refused >= (WATCHERS - held) as f64, "{refused} refused");
    assert!(open_connections(&app, "grpc").await >= held as f64);
    for (_channel, mut watch) in watches.into_iter().take(4) {
        match tokio::time::timeout(Duration::from_millis(100), watch.message()).await {
            Err(_) | Ok(Ok(Some(_))) => {}
            Ok(other) => panic!("a held watch stream ended: {other:?}"),
        }
    }
    smtp.next_mail().await;
}

/// 3,000 half-open HTTP connections from one address, each opened again as soon as the
/// service drops it, used to delay everyone's `/healthz` by seconds (9.5 s, or no answer):
/// they held every place on the port and filled the kernel's queue. Now the address's
/// connections past 64 not yet answered (EMAILVERIFY_HTTP_MAX_PENDING_PER_PEER) are closed
/// as soon as they are accepted, the flood is drained as fast as it comes, and `/healthz`
/// asked from another address on a fresh connection answers within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_flood_from_one_address_does_not_delay_others() {
    const FLOOD: usize = 3_000;
    // Bounds of the flood: connects in all, and time.
    const MAX_CONNECTS: usize = 60_000;
    const FLOOD_FOR: Duration = Duration::from_secs(20);
    const PROBES: usize = 8;
    let _one_at_a_time = HEAVY.lock().await;
    open_files_at_least(2 * FLOOD as u64 + 1024);
    let db = fresh_database(Backend::Sqlite).await;
    let smtp = SmtpSink::start().await;
    let app = serve(&db.url, &smtp, &Keyring::generate_key_base64(), &[]).await;
    let http_addr: SocketAddr = app.http_base.trim_start_matches("http://").parse().unwrap();

    // FLOOD sockets from the attacker's address that never send anything; each one the
    // service closes is opened again at once. The attacker runs on a thread and runtime of
    // its own, as it would on a host of its own: what the probes below measure is the
    // service, not this process's scheduler.
    let stop = CancellationToken::new();
    // A failing assertion stops the flood too.
    let _stop_on_drop = stop.clone().drop_guard();
    let connects = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let attack = {
        let (stop, connects) = (stop.clone(), connects.clone());
        futures::stream::iter(0..FLOOD).for_each_concurrent(None, move |_| {
            let (stop, connects) = (stop.clone(), connects.clone());
            async move {
                while !stop.is_cancelled()
                    && started.elapsed() < FLOOD_FOR
                    && connects.fetch_add(1, Ordering::Relaxed) < MAX_CONNECTS
                {
                    let connect =
                        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(http_addr));
                    let connected = tokio::select! {
                        c = connect => c,
                        () = stop.cancelled() => return,
                    };
                    let Ok(Ok(mut s)) = connected else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    tokio::select! {
                        _ = closed_within(&mut s, FLOOD_FOR) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        })
    };
    let flood = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(attack)
    });
    // Until every socket was opened once (at most 10 s).
    poll_until(Duration::from_secs(10), async || {
        (connects.load(Ordering::Relaxed) >= FLOOD).then_some(())
    })
    .await;
    let ramped = (connects.load(Ordering::Relaxed), started.elapsed());

    // Meanwhile someone else asks, as a browser would: a fresh connection each time.
    let mut took = Vec::with_capacity(PROBES);
    let mut open_http = 0f64;
    for _ in 0..PROBES {
        let answer = healthz_from(OTHER, &app.http_base).await;
        took.push(answer.unwrap_or_else(|e| panic!("/healthz from {OTHER} during the flood: {e}")));
        open_http = open_http.max(open_connections(&app, "http").await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let during = connects.load(Ordering::Relaxed);
    stop.cancel();
    tokio::task::spawn_blocking(move || flood.join())
        .await
        .unwrap()
        .expect("the attacker's thread ends");
    let refused = counter(&app, REFUSED_HTTP).await;
    eprintln!(
        "flood: {} connects in {:?} to open {FLOOD}, {during} by the last answer; {refused} refused; \
         at most {open_http} HTTP connections open; /healthz from {OTHER} took {took:?}",
        ramped.0, ramped.1
    );
    assert!(ramped.0 >= FLOOD, "the flood never reached {FLOOD} sockets");
    let slowest = took.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(1),
        "/healthz took up to {slowest:?} during the flood: {took:?}"
    );
    // The attacker held its 64, no more (plus the probes and scrapes in flight).
    assert!(open_http <= 64.0 + 4.0, "{open_http} open");
    assert!(refused >= (FLOOD - 64) as f64, "{refused} refused");
}

/// 200 people behind one carrier NAT share its address: each was answered once on a
/// kept-alive connection, and none of those is refused or closed (each asks again on its
/// connection and is answered), while the same address's connections that say nothing
/// are refused past 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_behind_one_address_are_not_refused() {
    const PEOPLE: usize = 200;
    const SILENT: usize = 100;
    const NAT: Ipv4Addr = ATTACKER;
    let _one_at_a_time = HEAVY.lock().await;
    open_files_at_least(4 * (PEOPLE + SILENT) as u64 + 1024);
    let db = fresh_database(Backend::Sqlite).await;
    let smtp = SmtpSink::start().await;
    let app = serve(&db.url, &smtp, &Keyring::generate_key_base64(), &[]).await;
    let http_addr: SocketAddr = app.http_base.trim_start_matches("http://").parse().unwrap();

    let mut people = Vec::with_capacity(PEOPLE);
    for i in 0..PEOPLE {
        let mut s = connect_from(NAT, http_addr).await.unwrap();
        let answer = healthz_on(&mut s)
            .await
            .unwrap_or_else(|e| panic!("person {i}: {e}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        people.push(s);
    }
    // The same address opens connections that say nothing: 64 are kept (for the header
    // timeout), the rest closed at once.
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(connect_from(NAT, http_addr).await.unwrap());
    }
    let closed = futures::future::join_all(
        silent
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(1))),
    )
    .await
    .into_iter()
    .filter(|closed| *closed)
    .count();
    assert_eq!(closed, SILENT - 64, "silent connections closed at once");

    // Everyone asks again on their own connection and is answered.
    for (i, s) in people.iter_mut().enumerate() {
        let answer = healthz_on(s)
            .await
            .unwrap_or_else(|e| panic!("person {i}, asking again: {e}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(counter(&app, REFUSED_HTTP).await, (SILENT - 64) as f64);
}

/// Behind EMAILVERIFY_TRUSTED_PROXIES the HTTP port's peer is the proxy, which speaks for
/// everyone: its connections are not bounded per peer (here 8), however many wait for their
/// first request. The gRPC port has no proxy in front: its bound still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_address_is_exempt_from_the_http_bound() {
    const PROXIED: usize = 40;
    const PROXY: Ipv4Addr = ATTACKER;
    let db = fresh_database(Backend::Sqlite).await;
    let smtp = SmtpSink::start().await;
    let app = serve(
        &db.url,
        &smtp,
        &Keyring::generate_key_base64(),
        &[
            ("EMAILVERIFY_TRUSTED_PROXIES", "1"),
            ("EMAILVERIFY_HTTP_MAX_PENDING_PER_PEER", "8"),
            ("EMAILVERIFY_MAX_CONNECTIONS_PER_PEER", "8"),
        ],
    )
    .await;
    let http_addr: SocketAddr = app.http_base.trim_start_matches("http://").parse().unwrap();

    let mut proxied = Vec::with_capacity(PROXIED);
    for _ in 0..PROXIED {
        proxied.push(connect_from(PROXY, http_addr).await.unwrap());
    }
    let closed = futures::future::join_all(
        proxied
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_millis(500))),
    )
    .await
    .into_iter()
    .filter(|closed| *closed)
    .count();
    assert_eq!(closed, 0, "connections from the proxy were refused");
    for (i, s) in proxied.iter_mut().enumerate() {
        let answer = healthz_on(s)
            .await
            .unwrap_or_else(|e| panic!("proxied connection {i}: {e}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(counter(&app, REFUSED_HTTP).await, 0.0);

    // gRPC from the same address: the ninth is refused.
    let mut grpc = Vec::with_capacity(9);
    for _ in 0..9 {
        grpc.push(connect_from(PROXY, app.grpc_addr).await.unwrap());
    }
    let closed = futures::future::join_all(
        grpc.iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(1))),
    )
    .await
    .into_iter()
    .filter(|closed| *closed)
    .count();
    assert_eq!(closed, 1, "gRPC connections past the bound closed at once");
    assert_eq!(counter(&app, REFUSED_GRPC).await, 1.0);
}

/// Near the HTTP port's cap (here 16), kept-alive connections waiting for their next
/// request are closed, the longest idle first, so that a new client gets in at once rather
/// than after they time out (the header timeout, 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connections_make_room_near_the_cap() {
    const CAP: usize = 16;
    let db = fresh_database(Backend::Sqlite).await;
    let smtp = SmtpSink::start().await;
    let app = serve(
        &db.url,
        &smtp,
        &Keyring::generate_key_base64(),
        &[("EMAILVERIFY_MAX_CONNECTIONS", "16")],
    )
    .await;
    let http_addr: SocketAddr = app.http_base.trim_start_matches("http://").parse().unwrap();

    // As many kept-alive connections as the cap, each answered once (from many hosts).
    let hosts = many_hosts();
    let mut idle = Vec::with_capacity(CAP);
    for (i, host) in hosts.iter().take(CAP).enumerate() {
        let mut s = connect_from(*host, http_addr).await.unwrap();
        let answer = healthz_on(&mut s)
            .await
            .unwrap_or_else(|e| panic!("kept-alive connection {i}: {e}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        idle.push(s);
    }
    let took = healthz_from(OTHER, &app.http_base)
        .await
        .expect("a new client gets in near the cap");
    eprintln!("a new client was answered in {took:?} beside {CAP} kept-alive connections");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let evicted = counter(
        &app,
        r#"emailverify_connections_evicted_total{port="http"}"#,
    )
    .await;
    assert!(evicted >= 1.0, "{evicted} evicted");
    assert!(open_connections(&app, "http").await <= CAP as f64);
}

/// The path of `program` on PATH, if any.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

crate::on_both_backends!(half_open_connections_are_dropped_and_the_service_keeps_answering);
