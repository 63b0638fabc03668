//! Settings: the embedded defaults, each bad setting named, secrets never shown.

use super::*;

fn defaults() -> Settings {
    Settings {
        data_dir: std::env::temp_dir().join(format!("ev-settings-{}", uuid::Uuid::now_v7())),
        ..Settings::default()
    }
}

#[test]
fn the_embedded_defaults_are_the_contracts() {
    let s = Settings::default();
    assert_eq!(s.database_url, "sqlite://data/emailverify.db?mode=rwc");
    assert_eq!(s.grpc_addr, "127.0.0.1:50051");
    assert_eq!(s.http_addr, "127.0.0.1:8080");
    assert_eq!(s.public_url, "http://127.0.0.1:8080");
    assert_eq!(s.mail_url, "file://data/outbox");
    assert_eq!(s.mail_from, "Wallet <no-reply@localhost>");
    let c = defaults().resolve().unwrap();
    assert_eq!(
        c.policy.verify_ttl,
        std::time::Duration::from_secs(24 * 3600)
    );
    assert_eq!(c.policy.change_ttl, std::time::Duration::from_secs(3600));
    assert_eq!(c.policy.resend_cooldown, std::time::Duration::from_secs(60));
    assert!(c.api_tokens.is_empty());
    // The edges (API.md, "Edges and operations, refined").
    assert_eq!(s.admin_addr, "127.0.0.1:9464");
    assert_eq!(c.admin_addr, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(c.trusted_proxies, 0);
    assert_eq!(
        c.connections.header_timeout,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(
        c.connections.idle_timeout,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(c.connections.max_connections, 1024);
    assert_eq!(c.connections.max_per_peer, 64);
    assert_eq!(c.connections.http_pending_per_peer, 64);
    assert_eq!(c.connections.grpc_max_streams, 100);
    assert!(c.success_url.is_none());
    // The feed (release 3): 256 watchers, closed after 60 s without reading.
    assert_eq!(s.max_watchers, "256");
    assert_eq!(c.feed.max_watchers, 256);
    assert_eq!(c.feed.watcher_idle, std::time::Duration::from_secs(60));
}

#[test]
fn a_success_url_must_be_an_http_or_https_url() {
    for good in [
        "https://wallet.example/verified",
        "http://127.0.0.1:8081/done?x=1",
    ] {
        let s = Settings {
            success_url: Some(good.into()),
            ..defaults()
        };
        assert_eq!(
            s.resolve().unwrap().success_url.unwrap().as_str(),
            good,
            "{good}"
        );
    }
    for bad in [
        "javascript:alert(1)",
        "data:text/html,hi",
        "ftp://wallet.example/x",
        "/verified",
        "wallet.example/verified",
        "https://",
        "file:///etc/passwd",
    ] {
        let s = Settings {
            success_url: Some(bad.into()),
            ..defaults()
        };
        let err = s
            .resolve()
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        assert_eq!(err.setting, "EMAILVERIFY_SUCCESS_URL", "{bad}");
    }
}

#[test]
fn a_generated_key_is_kept_and_reused() {
    let s = defaults();
    let first = s.resolve().unwrap().keys;
    let again = s.resolve().unwrap().keys;
    let t = crate::domain::Token::generate();
    assert_eq!(first.sign(&t), again.sign(&t));
}

#[test]
fn each_bad_setting_is_named() {
    type Tweak = fn(&mut Settings);
    let cases: [(Tweak, &str); 31] = [
        (
            |s| s.limit_per_user = "ten".into(),
            "EMAILVERIFY_LIMIT_PER_USER",
        ),
        (
            |s| s.limit_per_recipient = "0/1h".into(),
            "EMAILVERIFY_LIMIT_PER_RECIPIENT",
        ),
        (
            |s| s.tls_cert = Some("/nonexistent/cert.pem".into()),
            "EMAILVERIFY_TLS_KEY",
        ),
        (
            |s| s.tls_client_ca = Some("/nonexistent/ca.pem".into()),
            "EMAILVERIFY_TLS_CLIENT_CA",
        ),
        (|s| s.grpc_addr = "nope".into(), "EMAILVERIFY_GRPC_ADDR"),
        (|s| s.http_addr = "1.2.3.4".into(), "EMAILVERIFY_HTTP_ADDR"),
        (
            |s| s.public_url = "ftp://x".into(),
            "EMAILVERIFY_PUBLIC_URL",
        ),
        (
            |s| s.mail_url = "carrier-pigeon://x".into(),
            "EMAILVERIFY_MAIL_URL",
        ),
        (
            |s| s.mail_from = "not an address".into(),
            "EMAILVERIFY_MAIL_FROM",
        ),
        (
            |s| s.token_keys = Some("c2hvcnQ=".into()),
            "EMAILVERIFY_TOKEN_KEYS",
        ),
        (|s| s.verify_ttl = "banana".into(), "EMAILVERIFY_VERIFY_TTL"),
        (|s| s.change_ttl = "0s".into(), "EMAILVERIFY_CHANGE_TTL"),
        (
            |s| s.resend_cooldown = "-1s".into(),
            "EMAILVERIFY_RESEND_COOLDOWN",
        ),
        (
            |s| s.api_tokens = Some(" , ".into()),
            "EMAILVERIFY_API_TOKENS",
        ),
        (
            |s| s.success_url = Some("::".into()),
            "EMAILVERIFY_SUCCESS_URL",
        ),
        (|s| s.database_url = "mysql://x".into(), "DATABASE_URL"),
        (
            |s| s.success_url = Some("javascript:alert(1)".into()),
            "EMAILVERIFY_SUCCESS_URL",
        ),
        (
            |s| s.admin_addr = "localhost".into(),
            "EMAILVERIFY_ADMIN_ADDR",
        ),
        (
            |s| s.trusted_proxies = "-1".into(),
            "EMAILVERIFY_TRUSTED_PROXIES",
        ),
        (
            |s| s.trusted_proxies = "x-forwarded-for".into(),
            "EMAILVERIFY_TRUSTED_PROXIES",
        ),
        (
            |s| s.header_timeout = "0s".into(),
            "EMAILVERIFY_HEADER_TIMEOUT",
        ),
        (
            |s| s.idle_timeout = "soon".into(),
            "EMAILVERIFY_IDLE_TIMEOUT",
        ),
        (
            |s| s.max_connections = "0".into(),
            "EMAILVERIFY_MAX_CONNECTIONS",
        ),
        (
            |s| s.grpc_max_streams = "lots".into(),
            "EMAILVERIFY_GRPC_MAX_STREAMS",
        ),
        (|s| s.optimistic = "yes".into(), "EMAILVERIFY_OPTIMISTIC"),
        (
            |s| s.max_connections_per_peer = "0".into(),
            "EMAILVERIFY_MAX_CONNECTIONS_PER_PEER",
        ),
        (
            |s| s.max_connections_per_peer = "-5".into(),
            "EMAILVERIFY_MAX_CONNECTIONS_PER_PEER",
        ),
        (
            |s| s.http_max_pending_per_peer = "many".into(),
            "EMAILVERIFY_HTTP_MAX_PENDING_PER_PEER",
        ),
        (|s| s.max_watchers = "0".into(), "EMAILVERIFY_MAX_WATCHERS"),
        (
            |s| s.max_watchers = "many".into(),
            "EMAILVERIFY_MAX_WATCHERS",
        ),
        (
            |s| s.watcher_idle_timeout = "0s".into(),
            "EMAILVERIFY_WATCHER_IDLE_TIMEOUT",
        ),
    ];
    for (tweak, name) in cases {
        let mut s = defaults();
        tweak(&mut s);
        let err = s
            .resolve()
            .err()
            .unwrap_or_else(|| panic!("{name} accepted"));
        assert_eq!(err.setting, name);
        assert!(err.to_string().starts_with(name), "{err}");
    }
}

#[test]
fn debug_never_shows_a_key_a_token_or_a_password() {
    let s = Settings {
        database_url: "postgres://ev:dbpass@db.internal/ev?password=qpass".into(),
        mail_url: "smtps://mailer:mailpass@smtp.example.com:465".into(),
        token_keys: Some("c2VjcmV0LWtleS1tYXRlcmlhbC0xMjM0NTY3ODkwMTI=".into()),
        api_tokens: Some("api-token-1,api-token-2".into()),
        ..defaults()
    };
    let shown = format!("{s:?}");
    for secret in [
        "dbpass",
        "qpass",
        "mailpass",
        "c2VjcmV0",
        "api-token-1",
        "api-token-2",
    ] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    // What is not secret stays readable.
    assert!(shown.contains("db.internal"), "{shown}");
    assert!(shown.contains("smtp.example.com"), "{shown}");
    assert!(
        shown.contains("token_keys: Some(\"<redacted>\")"),
        "{shown}"
    );
}

#[test]
fn the_support_console_is_off_by_default_and_its_bad_settings_are_named() {
    let c = defaults().resolve().unwrap();
    assert!(matches!(c.support, crate::http::support::SupportAuth::Off));
    let cases: [(Option<&str>, Option<&str>, &str); 4] = [
        (Some("password"), None, "EMAILVERIFY_SUPPORT_AUTH"),
        (Some("header:"), None, "EMAILVERIFY_SUPPORT_AUTH"),
        (
            Some("tokens"),
            Some("alice:short"),
            "EMAILVERIFY_SUPPORT_TOKENS",
        ),
        (
            None,
            Some("alice:0123456789abcdef"),
            "EMAILVERIFY_SUPPORT_TOKENS",
        ),
    ];
    for (auth, tokens, named) in cases {
        let mut s = defaults();
        s.support_auth = auth.map(str::to_owned);
        s.support_tokens = tokens.map(str::to_owned);
        let err = s.resolve().err().expect("refused");
        assert_eq!(err.setting, named, "{auth:?} {tokens:?}: {err}");
    }
    // The agents' tokens are never shown.
    let mut s = defaults();
    s.support_tokens = Some("alice:0123456789abcdef".into());
    assert!(!format!("{s:?}").contains("0123456789abcdef"));
}
