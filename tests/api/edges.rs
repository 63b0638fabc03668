//! The edges an attacker on the network reaches first (API.md, "Edges and operations,
//! refined"): the client IP behind proxies, cross-site POSTs, failed caller
//! authentication, malformed protobuf, the admin port, and the success URL setting.
//! (Connections that never finish or never end: `connections.rs`.)

use std::time::Duration;

use emailverify::domain::Keyring;
use emailverify::grpc::pb;
use prost::Message;
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::helpers::process::{command, run, serve};
use crate::helpers::{
    Backend, Service, SmtpSink, fresh_database, metric, spawn_app, spawn_app_with,
};

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
    let foreign: [&[(&str, &str)]; 6] = [
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "https://attacker.example")],
        &[("origin", "null"), ("sec-fetch-site", "cross-site")],
        // Release 3: `Origin: null` alone is cross-site (a sandboxed frame, a no-referrer
        // page of another site, an older Safari that sends no Sec-Fetch-Site) ...
        &[("origin", "null")],
        // ... whatever Sec-Fetch-Site says beside it.
        &[("origin", "null"), ("sec-fetch-site", "same-origin")],
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
    // from our page (whose `<meta name="referrer" content="same-origin">` makes the
    // browser send our origin; `browser::` shows it in Chromium).
    let confirm = app
        .http
        .post(format!("{}/verify", app.http_base))
        .header("origin", &app.http_base)
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

/// Failed caller authentication: WARN in the logs (never the credential, at most one line
/// per 10 s however many fail), each counted. In a process of its own, whose logs and
/// metrics are this test's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_caller_authentication_is_logged_at_warn_and_counted() {
    use futures::StreamExt;
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
    // A caller hammering wrong tokens: every one counted, the WARN lines bounded
    // (release 3: 2,007 lines in 0.6 s before).
    const HAMMER: usize = 2000;
    let started = std::time::Instant::now();
    let answers = futures::stream::iter(0..HAMMER)
        .map(|_| call(Some("Bearer a-guessed-token-4711")))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    assert!(answers.iter().all(|c| *c == tonic::Code::Unauthenticated));
    assert_eq!(
        call(Some("Bearer the-right-token")).await,
        tonic::Code::NotFound,
        "the right token passes"
    );

    let page = app.metrics().await;
    for (reason, n) in [("missing", 1.0), ("wrong", HAMMER as f64)] {
        let series = format!(r#"emailverify_auth_failures_total{{reason="{reason}"}}"#);
        assert_eq!(metric(&page, &series), Some(n), "{series} in:\n{page}");
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
    // One at once, then at most one per 10 s of hammering.
    let bound = 2 + (elapsed.as_secs() / 10) as usize;
    assert!(
        !warnings.is_empty() && warnings.len() <= bound,
        "{} WARN lines for {} failures in {elapsed:?}: {logs}",
        warnings.len(),
        HAMMER + 1
    );
    assert_eq!(warnings[0]["reason"], "missing", "{logs}");
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

/// A slow request: headers sent, the body trickling in and never finished. The page
/// answers 408 once its 15 s are up and the connection goes; it never holds a handler
/// for ever. (The header deadline for requests that never finish their headers is
/// `connections::`'s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_never_finishes_is_cut_off_at_fifteen_seconds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(Backend::Sqlite).await;
    let addr = app.http_base.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    sock.write_all(
        b"POST /verify HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 100\r\n\r\ntoken=",
    )
    .await
    .unwrap();
    // One more byte every 2 s keeps the connection busy but never ends the body.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => {
                if sock.write_all(b"A").await.is_err() {
                    break;
                }
            }
        }
    }
    let waited = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        waited >= Duration::from_secs(14) && waited < Duration::from_secs(38),
        "cut off after {waited:?}"
    );
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

crate::on_both_backends!(
    behind_one_proxy_the_client_is_the_last_forwarded_entry,
    behind_two_proxies_the_client_is_second_from_the_right,
    without_trusted_proxies_the_header_is_ignored,
    a_cross_site_post_is_refused_and_counts_against_nobody,
);
