//! A real relay: STARTTLS and implicit TLS with AUTH, certificates checked against
//! EMAILVERIFY_MAIL_CA (made here with rcgen), never a plaintext fallback; our own pooled,
//! pipelined connections; and the headers every mail carries.

use std::path::PathBuf;
use std::sync::Arc;

use emailverify::clock::ShiftedClock;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::helpers::smtp::{SinkOptions, SinkTls};
use crate::helpers::{
    Backend, SmtpSink, TestApp, eventually, fresh_database, start, test_settings,
};

/// A CA and a certificate for 127.0.0.1 and localhost signed by it.
struct Pki {
    ca_pem: String,
    server: Arc<ServerConfig>,
}

fn make_pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server: Arc::new(server),
    }
}

const USER: &str = "wallet";
const PASS: &str = "s3cret:p@ss";

/// A relay that requires AUTH, with `tls`.
async fn relay(tls: SinkTls) -> Arc<SmtpSink> {
    SmtpSink::start_with(SinkOptions {
        tls,
        auth: Some((USER.into(), PASS.into())),
        ..SinkOptions::default()
    })
    .await
}

/// The service with `mail_url` (`{addr}` is the sink's address) and, if given, the CA file.
async fn serve(
    backend: Backend,
    sink: Arc<SmtpSink>,
    mail_url: &str,
    ca: Option<PathBuf>,
) -> TestApp {
    let db = fresh_database(backend).await;
    let mut settings = test_settings(&db, &sink);
    settings.mail_url = mail_url.replace("{addr}", &sink.addr.to_string());
    settings.relay.mail_ca = ca;
    start(db, sink, settings, ShiftedClock::default()).await
}

fn ca_file(dir: &tempfile::TempDir, pem: &str) -> PathBuf {
    let path = dir.path().join("relay-ca.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

/// user:pass in a URL: percent-encoded.
fn creds() -> String {
    format!("{USER}:{}", PASS.replace(':', "%3A").replace('@', "%40"))
}

async fn starttls_with_auth_delivers_over_tls_pipelined_with_our_headers(backend: Backend) {
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let sink = relay(SinkTls::StartTls(pki.server.clone())).await;
    let url = format!("smtp://{}@{{addr}}?tls=starttls", creds());
    let app = serve(
        backend,
        sink.clone(),
        &url,
        Some(ca_file(&dir, &pki.ca_pem)),
    )
    .await;

    for (user, email) in [
        ("user-1", "jane@example.com"),
        ("user-2", "joe@example.com"),
    ] {
        app.request_verification(user, email).await.unwrap();
        let mail = app.next_mail().await;
        assert_eq!(mail.to, vec![email.to_string()]);
        assert!(mail.tls, "the mail came over TLS");
        assert_eq!(mail.user.as_deref(), Some(USER));
        assert!(
            mail.raw.contains("Auto-Submitted: auto-generated\r\n"),
            "{}",
            mail.raw
        );
        assert!(
            mail.message_id.ends_with("@wallet.test"),
            "{}",
            mail.message_id
        );
    }
    assert!(
        sink.saw_pipelining(),
        "MAIL FROM, RCPT TO and DATA in one write"
    );
    assert_eq!(
        sink.connections(),
        1,
        "the second mail went on the first connection"
    );
}

async fn implicit_tls_with_auth_delivers(backend: Backend) {
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let sink = relay(SinkTls::Implicit(pki.server.clone())).await;
    let url = format!("smtps://{}@{{addr}}", creds());
    let app = serve(
        backend,
        sink.clone(),
        &url,
        Some(ca_file(&dir, &pki.ca_pem)),
    )
    .await;

    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    assert!(mail.tls);
    assert_eq!(mail.user.as_deref(), Some(USER));
}

async fn an_untrusted_certificate_delivers_nothing_and_the_mail_waits(backend: Backend) {
    // The relay's CA is neither a system root nor in EMAILVERIFY_MAIL_CA.
    let pki = make_pki();
    let sink = relay(SinkTls::Implicit(pki.server.clone())).await;
    let url = format!("smtps://{}@{{addr}}", creds());
    let app = serve(backend, sink.clone(), &url, None).await;

    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    eventually(
        "the worker tried and refused the certificate",
        std::time::Duration::from_secs(15),
        async || (sink.failed_handshakes() >= 1).then_some(()),
    )
    .await;
    // Why, for the operator: the mail's last error (and the log) says so.
    app.eventually_count(
        "outbox WHERE state = 'pending' AND attempts = 0 AND last_error LIKE '%certificate%'",
        1,
    )
    .await;
    app.assert_no_mail().await;
    assert_eq!(app.count("outbox WHERE state = 'dead'").await, 0);
}

async fn a_relay_without_starttls_gets_nothing_when_starttls_is_required(backend: Backend) {
    // Plain SMTP only: it offers no STARTTLS, so it must not get the mail in the clear.
    let sink = SmtpSink::start().await;
    let app = serve(backend, sink.clone(), "smtp://{addr}?tls=starttls", None).await;

    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    app.eventually_count(
        "outbox WHERE state = 'pending' AND attempts = 0 AND last_error LIKE '%STARTTLS%'",
        1,
    )
    .await;
    app.assert_no_mail().await;
}

async fn without_pipelining_a_refusal_is_classified_and_the_connection_serves_on(backend: Backend) {
    let sink = SmtpSink::start_with(SinkOptions {
        pipelining: false,
        ..SinkOptions::default()
    })
    .await;
    let app = serve(backend, sink.clone(), "smtp://{addr}", None).await;
    sink.reply_next(&["550 5.1.1 <jane@example.com>: no such user"]);

    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    // Permanent: dead at once; the reason is the reply, the address masked.
    app.eventually_count(
        "outbox WHERE state = 'dead' AND last_error LIKE '%550 5.1.1%' \
         AND last_error NOT LIKE '%jane@%'",
        1,
    )
    .await;
    app.request_verification("user-2", "joe@example.com")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    assert_eq!(mail.to, vec!["joe@example.com".to_string()]);
    assert!(!sink.saw_pipelining());
    // After the refusal the connection was reset and served the next mail.
    assert_eq!(sink.connections(), 1);
}

async fn a_pooled_connection_the_relay_closed_is_replaced_without_a_retry(backend: Backend) {
    let sink = SmtpSink::start().await;
    let app = serve(backend, sink.clone(), "smtp://{addr}", None).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    app.next_mail().await;
    // The relay restarts: the pooled connection is dead, and nobody told the client.
    sink.down();
    eventually(
        "the relay closed its sessions",
        std::time::Duration::from_secs(5),
        async || (sink.open_sessions() == 0).then_some(()),
    )
    .await;
    sink.up();

    app.request_verification("user-2", "joe@example.com")
        .await
        .unwrap();
    let mail = app.next_mail().await;
    assert_eq!(mail.to, vec!["joe@example.com".to_string()]);
    assert_eq!(
        sink.connections(),
        2,
        "one fresh connection replaced the dead one"
    );
    // Sent at the first try: no deferral, no error recorded.
    app.eventually_count("outbox WHERE state = 'sent' AND last_error IS NULL", 2)
        .await;
    app.assert_no_mail().await;
}

crate::on_both_backends!(
    a_pooled_connection_the_relay_closed_is_replaced_without_a_retry,
    starttls_with_auth_delivers_over_tls_pipelined_with_our_headers,
    implicit_tls_with_auth_delivers,
    an_untrusted_certificate_delivers_nothing_and_the_mail_waits,
    a_relay_without_starttls_gets_nothing_when_starttls_is_required,
    without_pipelining_a_refusal_is_classified_and_the_connection_serves_on,
);
