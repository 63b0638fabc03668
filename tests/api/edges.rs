//! The edges an attacker on the network reaches first (API.md, "Edges and operations,
//! refined"): connections that never finish or never end, the client IP behind proxies,
//! cross-site POSTs, failed caller authentication, malformed protobuf, the admin port, and
//! the success URL setting.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use emailverify::domain::Keyring;
use emailverify::grpc::pb;
use futures::StreamExt;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::process::{command, run, serve, serve_with};
use crate::helpers::{
    Backend, Service, SmtpSink, eventually, fresh_database, metric, spawn_app, spawn_app_with,
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

/// POSTs an unknown token to /verify with these X-Forwarded-For lines (each its own header
/// line, in this order, as HAProxy's `option forwardfor` adds them).
async fn post_forwarded_for(app: &Service, lines: &[&str]) -> u16 {
    let mut req = app.http.post(format!("{}/verify", app.http_base));
    for line in lines {
        req = req.header("x-forwarded-for", *line);
    }
    req.form(&[("token", "A".repeat(43))])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn behind_one_proxy_the_client_is_the_last_forwarded_entry(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.limit_failed_confirms_per_ip = "2/10m".into();
        s.trusted_proxies = "1".into();
    })
    .await;
    // The client sends a header of its own naming someone else, a new one each time; our
    // proxy appends a line with the client's real address.
    assert_eq!(
        post_forwarded_for(&app, &["203.0.113.1", "198.51.100.7"]).await,
        404
    );
    assert_eq!(
        post_forwarded_for(&app, &["203.0.113.2", "198.51.100.7"]).await,
        404
    );
    assert_eq!(
        post_forwarded_for(&app, &["203.0.113.3", "198.51.100.7"]).await,
        429,
        "the client behind the proxy is locked out, whatever it names"
    );
    // The same, as a proxy that appends to the client's line (nginx) writes it.
    assert_eq!(
        post_forwarded_for(&app, &["203.0.113.4, 198.51.100.7"]).await,
        429
    );
    // The addresses it named are not locked out, and neither is anyone else.
    assert_eq!(post_forwarded_for(&app, &["203.0.113.1"]).await, 404);
    assert_eq!(
        post_forwarded_for(&app, &["198.51.100.7", "198.51.100.8"]).await,
        404
    );
}

async fn behind_two_proxies_the_client_is_second_from_the_right(backend: Backend) {
    let app = spawn_app_with(backend, |s| {
        s.limit_failed_confirms_per_ip = "1/10m".into();
        s.trusted_proxies = "2".into();
    })
    .await;
    // The client's lie and the outer proxy's entry (the client's address) on one line, the
    // inner proxy's (the outer proxy's address) on a second.
    let post = |lie: &str| {
        let first = format!("{lie}, 198.51.100.7");
        let app = &app;
        async move { post_forwarded_for(app, &[&first, "192.0.2.10"]).await }
    };
    assert_eq!(post("203.0.113.1").await, 404);
    assert_eq!(post("203.0.113.2").await, 429, "the client is locked out");
    // Neither the outer proxy (which every client shares) nor the named address is.
    assert_eq!(
        post_forwarded_for(&app, &["192.0.2.99, 192.0.2.10", "192.0.2.10"]).await,
        404
    );
    assert_eq!(
        post_forwarded_for(&app, &["203.0.113.2", "192.0.2.10"]).await,
        404
    );
    // A request that reached the inner proxy directly has one entry: that client.
    assert_eq!(post_forwarded_for(&app, &["198.51.100.7"]).await, 429);
}

async fn without_trusted_proxies_the_header_is_ignored(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.limit_failed_confirms_per_ip = "1/10m".into()).await;
    assert_eq!(post_forwarded_for(&app, &["198.51.100.7"]).await, 404);
    assert_eq!(
        post_forwarded_for(&app, &["198.51.100.8"]).await,
        429,
        "the socket's peer is the client: naming another address changes nothing"
    );
}

async fn a_cross_site_post_is_refused_and_counts_against_nobody(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.limit_failed_confirms_per_ip = "1/10m".into()).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let token = app.token_in(&app.next_mail().await);
    let unknown = "A".repeat(43);
    let foreign: [&[(&str, &str)]; 4] = [
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "https://attacker.example")],
        &[("origin", "null"), ("sec-fetch-site", "cross-site")],
        &[
            ("origin", "http://127.0.0.1:1"),
            ("sec-fetch-site", "same-site"),
        ],
    ];
    for path in ["/verify", "/cancel", "/resend"] {
        for headers in foreign {
            for t in [token.as_str(), unknown.as_str()] {
                let mut req = app.http.post(format!("{}{path}", app.http_base));
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                let resp = req.form(&[("token", t)]).send().await.unwrap();
                assert_eq!(resp.status(), 403, "{path} {headers:?}");
                assert!(
                    resp.headers()["content-type"]
                        .to_str()
                        .unwrap()
                        .starts_with("text/html")
                );
                let page = resp.text().await.unwrap();
                assert!(page.contains("another website"), "{page}");
            }
        }
    }
    // Nothing was done: the link is live, the user unverified, the flow pending.
    assert_eq!(
        app.get(&format!("/verify?token={token}")).await.status(),
        200
    );
    let status = app.status("user-1").await.unwrap();
    assert!(!status.email_verified && status.pending.is_some());
    // And nobody is locked out (the limit is one failure): the person's own click works,
    // from our page (which makes the browser send `Origin: null`) or as our origin.
    let confirm = app
        .http
        .post(format!("{}/verify", app.http_base))
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(confirm.status(), 200);
    assert!(app.status("user-1").await.unwrap().email_verified);
    let same_origin = app
        .http
        .post(format!("{}/verify", app.http_base))
        .header("origin", &app.http_base)
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        same_origin.status(),
        409,
        "already confirmed: judged, not refused"
    );
}

/// Failed caller authentication: WARN in the logs (never the credential), counted. In a
/// process of its own, whose logs and metrics are this test's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_caller_authentication_is_logged_at_warn_and_counted() {
    let db = fresh_database(Backend::Sqlite).await;
    let smtp = SmtpSink::start().await;
    let app = serve(
        &db.url,
        &smtp,
        &Keyring::generate_key_base64(),
        &[
            ("EMAILVERIFY_API_TOKENS", "the-right-token"),
            ("EMAILVERIFY_LOG_FORMAT", "json"),
        ],
    )
    .await;
    let call = |bearer: Option<&'static str>| {
        let mut grpc = app.grpc.clone();
        async move {
            let mut req = tonic::Request::new(pb::GetStatusRequest {
                user_id: "user-1".into(),
            });
            if let Some(b) = bearer {
                req.metadata_mut()
                    .insert("authorization", b.parse().unwrap());
            }
            grpc.get_status(req).await.unwrap_err().code()
        }
    };
    assert_eq!(call(None).await, tonic::Code::Unauthenticated);
    assert_eq!(
        call(Some("Bearer a-guessed-token-4711")).await,
        tonic::Code::Unauthenticated
    );
    assert_eq!(
        call(Some("Bearer the-right-token")).await,
        tonic::Code::NotFound,
        "the right token passes"
    );

    let page = app.metrics().await;
    for reason in ["missing", "wrong"] {
        let series = format!(r#"emailverify_auth_failures_total{{reason="{reason}"}}"#);
        assert_eq!(metric(&page, &series), Some(1.0), "{series} in:\n{page}");
    }
    let (_, logs) = app.terminate().await;
    let warnings: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("authentication failed")
        })
        .collect();
    assert_eq!(warnings.len(), 2, "{logs}");
    assert_eq!(warnings[0]["reason"], "missing", "{logs}");
    assert_eq!(warnings[1]["reason"], "wrong", "{logs}");
    assert!(
        warnings
            .iter()
            .all(|w| w["peer"].as_str().unwrap_or("").contains("127.0.0.1")),
        "{logs}"
    );
    for secret in ["a-guessed-token-4711", "the-right-token"] {
        assert!(!logs.contains(secret), "{secret} reached the logs");
    }
}

/// Bytes, sent and received as they are: to send what is not a valid message.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let bytes = src.chunk().to_vec();
        src.advance(bytes.len());
        Ok(Some(bytes))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_message_is_invalid_argument() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut grpc = tonic::client::Grpc::new(app.channel().await);
    let mut call = async |path: &'static str, body: Vec<u8>| {
        grpc.ready().await.unwrap();
        grpc.unary(
            tonic::Request::new(body),
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            Raw,
        )
        .await
    };
    // A length that runs past the end; a wire type that does not exist; a truncated varint.
    let malformed: [&[u8]; 3] = [&[0x0a, 0x05, b'a'], &[0x0f, 0x01], &[0x08, 0xff]];
    for path in [
        "/emailverify.v1.EmailVerification/GetStatus",
        "/emailverify.v1.EmailVerification/RequestVerification",
        "/emailverify.v1.EmailVerification/ConfirmLink",
        "/grpc.health.v1.Health/Check",
    ] {
        for body in malformed {
            let status = call(path, body.to_vec()).await.unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{path} {body:?}: {status:?}"
            );
        }
    }
    // The same path with a well-formed message is judged as usual.
    let valid = pb::GetStatusRequest {
        user_id: "nobody".into(),
    }
    .encode_to_vec();
    let status = call("/emailverify.v1.EmailVerification/GetStatus", valid)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_on_the_admin_port_only() {
    let app = spawn_app(Backend::Sqlite).await;
    assert_eq!(
        app.get("/metrics").await.status(),
        404,
        "not on the public port"
    );
    let page = app.metrics().await;
    assert!(page.contains("emailverify_connections_open"), "{page}");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(app.get(path).await.status(), 200, "public {path}");
        assert_eq!(app.admin_get(path).await.status(), 200, "admin {path}");
    }
    assert_eq!(
        app.admin_get("/verify").await.status(),
        404,
        "no pages on the admin port"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_url_that_is_not_http_is_refused_at_start() {
    for bad in [
        "javascript:alert(1)",
        "/verified",
        "ftp://wallet.example/ok",
    ] {
        let ran = run(command(&["serve"])
            .env("DATABASE_URL", "sqlite::memory:")
            .env("EMAILVERIFY_TOKEN_KEYS", Keyring::generate_key_base64())
            .env("EMAILVERIFY_GRPC_ADDR", "127.0.0.1:0")
            .env("EMAILVERIFY_HTTP_ADDR", "127.0.0.1:0")
            .env("EMAILVERIFY_ADMIN_ADDR", "127.0.0.1:0")
            .env("EMAILVERIFY_SUCCESS_URL", bad))
        .await;
        assert!(!ran.status.success(), "{bad} accepted: {}", ran.stderr);
        assert!(
            ran.stderr.contains("EMAILVERIFY_SUCCESS_URL"),
            "{bad}: {}",
            ran.stderr
        );
    }
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

crate::on_both_backends!(
    half_open_connections_are_dropped_and_the_service_keeps_answering,
    behind_one_proxy_the_client_is_the_last_forwarded_entry,
    behind_two_proxies_the_client_is_second_from_the_right,
    without_trusted_proxies_the_header_is_ignored,
    a_cross_site_post_is_refused_and_counts_against_nobody,
);
