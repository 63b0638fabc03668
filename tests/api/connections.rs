//! Connections that never finish or never end (API.md, "Edges and operations, refined"):
//! half-open connections on both ports, idle connections, calls per gRPC connection, and a
//! full file-descriptor table. The service keeps answering those that get in.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use emailverify::domain::Keyring;
use emailverify::grpc::pb;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::process::{serve, serve_with};
use crate::helpers::{
    Backend, Service, SmtpSink, eventually, fresh_database, metric, spawn_app_with,
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

/// Opens `n` connections to `addr` and sends each `first` (maybe nothing), never more.
/// The task returned waits (at most `within` from the first connect) for the service to
/// close each one, and gives how long the last one took, or panics naming how many were
/// still open.
async fn hold_until_closed(
    addr: SocketAddr,
    n: usize,
    first: &'static [u8],
    within: Duration,
) -> tokio::task::JoinHandle<Duration> {
    let started = Instant::now();
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .expect("connect within 10 s")
            .expect("connect");
        if !first.is_empty() {
            s.write_all(first).await.unwrap();
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
    let held = [
        hold_until_closed(app.grpc_addr, HELD / 2, b"", deadline).await,
        hold_until_closed(app.grpc_addr, HELD / 2, b"PRI * HTTP/2.0\r\n", deadline).await,
        hold_until_closed(http_addr, HELD / 2, b"", deadline).await,
        hold_until_closed(
            http_addr,
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
        .timeout(Duration::from_secs(8))
        .build()
        .unwrap();
    let healthz = fresh
        .get(format!("{}/healthz", app.http_base))
        .send()
        .await
        .expect("/healthz answers during the attack");
    assert_eq!(healthz.status(), 200);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(8))
        .timeout(Duration::from_secs(8))
        .connect()
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

    // More silent connections than the table holds.
    let held = hold_until_closed(app.grpc_addr, 200, b"", Duration::from_secs(20)).await;
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

/// The path of `program` on PATH, if any.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

crate::on_both_backends!(half_open_connections_are_dropped_and_the_service_keeps_answering);
