//! gRPC over TLS, and mutual TLS: with EMAILVERIFY_TLS_CLIENT_CA set, a client without a
//! certificate from that CA never reaches an RPC. Certificates are made by the test (rcgen).

use std::path::Path;

use emailverify::grpc::pb::{self, EmailVerificationClient};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::helpers::{Backend, TestApp, spawn_app_with};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    stranger: (String, String),
}

fn make_pki() -> Pki {
    let ca = new_ca();
    let leaf = |name: &str, issuer: &CertifiedIssuer<'static, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&key, issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let other_ca = new_ca();
    Pki {
        ca_pem: ca.pem(),
        server: leaf("localhost", &ca),
        client: leaf("wallet-api", &ca),
        stranger: leaf("wallet-api", &other_ca),
    }
}

fn new_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn write(dir: &Path, name: &str, pem: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

async fn client(
    app: &TestApp,
    pki: &Pki,
    identity: Option<&(String, String)>,
) -> Result<EmailVerificationClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{}", app.grpc_addr))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(EmailVerificationClient::new(channel))
}

async fn call(
    c: Result<EmailVerificationClient<Channel>, tonic::transport::Error>,
) -> Result<(), String> {
    let mut c = c.map_err(|e| format!("connect: {e}"))?;
    c.request_verification(pb::RequestVerificationRequest {
        user_id: "user-1".into(),
        email: "jane@example.com".into(),
        locale: String::new(),
    })
    .await
    .map(|_| ())
    .map_err(|s| format!("rpc: {s:?}"))
}

async fn with_a_client_ca_only_clients_with_its_certificates_get_in(backend: Backend) {
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (
        write(dir.path(), "server.pem", &pki.server.0),
        write(dir.path(), "server.key", &pki.server.1),
    );
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let app = spawn_app_with(backend, |s| {
        s.tls_cert = Some(cert);
        s.tls_key = Some(key);
        s.tls_client_ca = Some(ca);
    })
    .await;

    assert!(
        call(client(&app, &pki, None).await).await.is_err(),
        "no client certificate: refused"
    );
    assert!(
        call(client(&app, &pki, Some(&pki.stranger)).await)
            .await
            .is_err(),
        "another CA's certificate: refused"
    );
    assert!(app.count("users").await == 0, "nothing got through");

    call(client(&app, &pki, Some(&pki.client)).await)
        .await
        .expect("a certificate from the CA gets in");
    assert_eq!(app.count("users").await, 1);
    // The audit trail tells which certificate called.
    assert_eq!(app.count("events WHERE actor LIKE 'api mtls:%'").await, 1);
}

async fn with_tls_alone_plaintext_is_refused_and_tls_works(backend: Backend) {
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (
        write(dir.path(), "server.pem", &pki.server.0),
        write(dir.path(), "server.key", &pki.server.1),
    );
    let app = spawn_app_with(backend, |s| {
        s.tls_cert = Some(cert);
        s.tls_key = Some(key);
    })
    .await;
    assert!(
        app.status("user-1").await.is_err(),
        "plaintext gRPC is refused"
    );
    call(client(&app, &pki, None).await)
        .await
        .expect("TLS without a client certificate");
}

crate::on_both_backends!(
    with_a_client_ca_only_clients_with_its_certificates_get_in,
    with_tls_alone_plaintext_is_refused_and_tls_works,
);
