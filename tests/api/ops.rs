//! Operations: gRPC health and reflection, HTTP liveness and readiness, metrics (on the
//! admin port: `Service::metrics`).

use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use emailverify::domain::Keyring;

use crate::helpers::process::serve;
use crate::helpers::{
    Backend, SmtpSink, expect_err, fresh_database, metric, spawn_app, spawn_app_with,
};

async fn health_reports_serving_for_the_service_and_the_server(backend: Backend) {
    let app = spawn_app(backend).await;
    let channel = app.channel().await;
    let mut health = HealthClient::new(channel);
    for service in ["emailverify.v1.EmailVerification", ""] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap();
        assert_eq!(
            resp.into_inner().status,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    // On the public port and on the admin port alike.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
        assert_eq!(app.admin_get(path).await.status(), 200, "admin {path}");
    }
}

async fn reflection_lists_the_service_without_the_proto_file(backend: Backend) {
    // With API tokens set, reflection (like health) still needs none.
    let app = spawn_app_with(backend, |s| s.api_tokens = Some("s3cret".into())).await;
    let channel = app.channel().await;
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(resp)) = stream.next().await else {
        panic!("no reflection answer")
    };
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected answer")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"emailverify.v1.EmailVerification".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
}

/// The metrics are read from a process of the binary of this test's own: the recorder is
/// process-wide, and in this process every other test's traffic would count too. There,
/// each value is exactly what this test caused.
async fn metrics_expose_rpcs_mail_outbox_and_the_confirmation_funnel(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let app = serve(&db.url, &smtp, &Keyring::generate_key_base64(), &[]).await;
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let mail = smtp.next_mail().await;
    app.http.get(app.link_in(&mail)).send().await.unwrap(); // a page view (a scanner, or the person)
    app.confirm(&app.token_in(&mail)).await.unwrap();
    expect_err(app.status("nobody").await);
    app.eventually_count("events WHERE event_type = 'mail_sent'", 1)
        .await;

    let page = app.metrics().await;
    for (series, value) in [
        (
            r#"emailverify_rpc_requests_total{method="RequestVerification",code="OK"}"#,
            1.0,
        ),
        (
            r#"emailverify_rpc_requests_total{method="GetStatus",code="NOT_FOUND"}"#,
            1.0,
        ),
        (
            r#"emailverify_rpc_duration_seconds_count{method="ConfirmLink"}"#,
            1.0,
        ),
        (
            r#"emailverify_rpc_duration_seconds_bucket{method="ConfirmLink",le="+Inf"}"#,
            1.0,
        ),
        (r#"emailverify_flows_requested_total{kind="verify"}"#, 1.0),
        (
            r#"emailverify_confirmations_total{outcome="email_verified",via="link"}"#,
            1.0,
        ),
        (r#"emailverify_link_page_views_total{result="live"}"#, 1.0),
        (
            r#"emailverify_refusals_total{reason="USER_NOT_FOUND"}"#,
            1.0,
        ),
        (
            r#"emailverify_mail_sent_total{template="verify_link"}"#,
            1.0,
        ),
        ("emailverify_outbox_depth", 0.0),
        ("emailverify_outbox_dead", 0.0),
    ] {
        assert_eq!(metric(&page, series), Some(value), "{series} in:\n{page}");
    }
    for series in [
        r#"emailverify_rpc_duration_seconds_bucket{method="ConfirmLink",le="0.005"}"#,
        "emailverify_outbox_oldest_age_seconds",
    ] {
        assert!(
            metric(&page, series).is_some(),
            "{series} missing from:\n{page}"
        );
    }
    assert!(app.terminate().await.0.success());
}

/// Every `emailverify_*` metric the dashboard and the alerts use is one the service really
/// exports (after each kind of event has happened once), in a process of its own so that no
/// other test's events can export a metric for it.
async fn the_dashboard_and_alerts_name_only_exported_metrics(backend: Backend) {
    let db = fresh_database(backend).await;
    let smtp = SmtpSink::start().await;
    let app = serve(
        &db.url,
        &smtp,
        &Keyring::generate_key_base64(),
        &[
            ("EMAILVERIFY_LIMIT_PER_RECIPIENT", "1/1h"),
            ("EMAILVERIFY_MAIL_RETRY_BASE", "50ms"),
        ],
    )
    .await;
    // sent, retried, dead, deferred; a confirmation; a live page view; refusals; a limit.
    smtp.reply_next(&["451 4.3.0 later"]);
    app.request_verification("user-1", "jane@example.com")
        .await
        .unwrap();
    let mail = smtp.next_mail().await;
    // The same inbox again, from another account: over the per-recipient limit.
    expect_err(app.request_verification("user-2", "jane@example.com").await);
    app.http.get(app.link_in(&mail)).send().await.unwrap();
    app.confirm(&app.token_in(&mail)).await.unwrap();
    smtp.reply_next(&["550 5.1.1 no"]);
    app.request_verification("user-3", "dead@example.com")
        .await
        .unwrap();
    app.eventually_count("outbox WHERE state = 'dead'", 1).await;
    smtp.down();
    app.request_verification("user-4", "held@example.com")
        .await
        .unwrap();
    app.eventually_count("outbox WHERE last_error LIKE '%refused%'", 1)
        .await;
    smtp.up();
    smtp.next_mail().await;

    let exported: std::collections::HashSet<String> = app
        .metrics()
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut parts = l.split_whitespace();
            let (name, kind) = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or(""),
            );
            let mut names = vec![name.clone()];
            if kind == "histogram" {
                names.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
            }
            names
        })
        .collect();
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["ops/grafana/emailverify.json", "ops/prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let used: std::collections::BTreeSet<String> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("emailverify_"))
            .map(str::to_string)
            .collect();
        assert!(!used.is_empty(), "{file} names no metric");
        for name in used {
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which /metrics does not export: {exported:?}"
            );
        }
    }
    assert!(app.terminate().await.0.success());
}

crate::on_both_backends!(
    the_dashboard_and_alerts_name_only_exported_metrics,
    metrics_expose_rpcs_mail_outbox_and_the_confirmation_funnel,
    health_reports_serving_for_the_service_and_the_server,
    reflection_lists_the_service_without_the_proto_file,
);

/// The database going away makes RPCs fail with UNAVAILABLE (safe to retry) and readiness
/// false; both recover when it returns, without restarting the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_is_unavailable_and_recovers_without_a_restart() {
    use sea_orm::ConnectionTrait;
    if !crate::helpers::postgres_available().await {
        return;
    }
    let app = spawn_app(Backend::Postgres).await;
    app.verified_user("user-1", "jane@example.com").await;
    let admin = sea_orm::Database::connect(crate::helpers::postgres_admin_url().await.unwrap())
        .await
        .unwrap();
    let name = &app.db_name;
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();

    let err = app.status("user-1").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(app.get("/readyz").await.status(), 503);

    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let status = app
        .status("user-1")
        .await
        .expect("recovered without a restart");
    assert!(status.email_verified);
    assert_eq!(app.get("/readyz").await.status(), 200);
}
