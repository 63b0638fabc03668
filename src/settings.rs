//! Settings: every variable of the contract, also a `--flag` of `emailverify serve`
//! (clap reads both). Raw strings are parsed once, here, into typed values; a bad value
//! stops the start with a message that names the setting.

use lettre::message::Mailbox;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::core::Policy;
use crate::domain::{Keyring, Rate};
use crate::mail::outbox::RetryPolicy;
use crate::mail::transport::Transport;

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Database: `sqlite://…` (embedded) or `postgres://…` (production).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/emailverify.db?mode=rwc"
    )]
    pub database_url: String,
    /// Where the gRPC API listens.
    #[arg(long, env = "EMAILVERIFY_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,
    /// Where the HTTP link pages (and /healthz, /readyz) listen.
    #[arg(long, env = "EMAILVERIFY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// Base of the links in emails.
    #[arg(
        long,
        env = "EMAILVERIFY_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: String,
    /// `file://dir` (.eml files), `smtp://host:port[?tls=starttls]`, `smtps://user:pass@host:465`, or `log`.
    #[arg(
        long,
        env = "EMAILVERIFY_MAIL_URL",
        default_value = "file://data/outbox",
        hide_env_values = true
    )]
    pub mail_url: String,
    /// The From: of every mail.
    #[arg(
        long,
        env = "EMAILVERIFY_MAIL_FROM",
        default_value = "Wallet <no-reply@localhost>"
    )]
    pub mail_from: String,
    /// Comma list of base64 keys, newest first (the first signs, all verify).
    /// Unset: a key is generated into the data folder.
    #[arg(long, env = "EMAILVERIFY_TOKEN_KEYS", hide_env_values = true)]
    pub token_keys: Option<String>,
    /// Lifetime of a sign-up / add-email link.
    #[arg(long, env = "EMAILVERIFY_VERIFY_TTL", default_value = "24h")]
    pub verify_ttl: String,
    /// Lifetime of each link of a change.
    #[arg(long, env = "EMAILVERIFY_CHANGE_TTL", default_value = "1h")]
    pub change_ttl: String,
    /// Earliest a link may be sent again.
    #[arg(long, env = "EMAILVERIFY_RESEND_COOLDOWN", default_value = "60s")]
    pub resend_cooldown: String,
    /// Comma list of bearer tokens callers must present. Unset: no caller authentication.
    #[arg(long, env = "EMAILVERIFY_API_TOKENS", hide_env_values = true)]
    pub api_tokens: Option<String>,
    /// Unset: a built-in success page; set: 303 there after a confirmation.
    #[arg(long, env = "EMAILVERIFY_SUCCESS_URL")]
    pub success_url: Option<String>,
    /// Requests + resends per user, `N/period`.
    #[arg(long, env = "EMAILVERIFY_LIMIT_PER_USER", default_value = "10/1h")]
    pub limit_per_user: String,
    /// Link mails per recipient address, whatever the account asking.
    #[arg(long, env = "EMAILVERIFY_LIMIT_PER_RECIPIENT", default_value = "5/1h")]
    pub limit_per_recipient: String,
    /// Failed confirmations per client IP on the link pages; then LOCKED_OUT.
    #[arg(
        long,
        env = "EMAILVERIFY_LIMIT_FAILED_CONFIRMS_PER_IP",
        default_value = "20/10m"
    )]
    pub limit_failed_confirms_per_ip: String,
    /// How long RequestChange is refused after a "this wasn't me" report of a change.
    #[arg(long, env = "EMAILVERIFY_CHANGE_FREEZE", default_value = "24h")]
    pub change_freeze: String,
    /// Whom the change notice tells people to contact.
    #[arg(
        long,
        env = "EMAILVERIFY_SUPPORT_CONTACT",
        default_value = "our support team"
    )]
    pub support_contact: String,
    /// Behind a reverse proxy: the header it puts the client IP in (e.g. x-forwarded-for;
    /// its last entry is used). Unset: the TCP peer address.
    #[arg(long, env = "EMAILVERIFY_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<String>,
    /// PEM certificate chain: serve gRPC over TLS.
    #[arg(long, env = "EMAILVERIFY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of EMAILVERIFY_TLS_CERT.
    #[arg(long, env = "EMAILVERIFY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: require gRPC clients to present a certificate it signed (mutual TLS).
    #[arg(long, env = "EMAILVERIFY_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Where a generated token key is kept when EMAILVERIFY_TOKEN_KEYS is unset.
    #[arg(long, env = "EMAILVERIFY_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// First retry delay of a failed mail (doubles per attempt, with jitter).
    #[arg(long, env = "EMAILVERIFY_MAIL_RETRY_BASE", default_value = "5s")]
    pub mail_retry_base: String,
    /// Failed attempts after which a mail is dead.
    #[arg(long, env = "EMAILVERIFY_MAIL_MAX_ATTEMPTS", default_value = "12")]
    pub mail_max_attempts: String,
    /// Most PostgreSQL connections one process holds (SQLite: always one).
    #[arg(long, env = "EMAILVERIFY_DB_POOL", default_value = "32")]
    pub db_pool: String,
    /// How long a worker's claim on a mail holds; a crashed process's claims return after it.
    #[arg(long, env = "EMAILVERIFY_MAIL_LEASE", default_value = "60s")]
    pub mail_lease: String,
    /// On SIGTERM: how long in-flight RPCs, pages and mail sends may take to finish.
    #[arg(long, env = "EMAILVERIFY_SHUTDOWN_TIMEOUT", default_value = "20s")]
    pub shutdown_timeout: String,
    /// Log format: `pretty` or `json`.
    #[arg(long, env = "EMAILVERIFY_LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
}

impl Default for Settings {
    /// The embedded defaults, as `emailverify serve` with no flags and no environment.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Probe {
            #[command(flatten)]
            settings: Settings,
        }
        <Probe as clap::Parser>::parse_from(["emailverify"]).settings
    }
}

/// Settings after parsing: what the application is built from.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub policy: Policy,
    pub transport: Transport,
    pub mail_from: Mailbox,
    pub keys: Keyring,
    pub api_tokens: Vec<String>,
    pub success_url: Option<String>,
    pub retry: RetryPolicy,
    pub shutdown_timeout: std::time::Duration,
    pub db_pool: u32,
    pub client_ip_header: Option<axum::http::HeaderName>,
    pub tls: Option<TlsConfig>,
}

/// gRPC TLS material, read at start.
#[derive(Clone)]
pub struct TlsConfig {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Set: clients must present a certificate signed by this CA.
    pub client_ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct SettingError {
    pub setting: &'static str,
    pub message: String,
}

fn bad(setting: &'static str, message: impl Into<String>) -> SettingError {
    SettingError {
        setting,
        message: message.into(),
    }
}

impl Settings {
    /// Parses every setting into its typed value; the first bad one stops the start.
    pub fn resolve(&self) -> Result<Config, SettingError> {
        let grpc_addr = self
            .grpc_addr
            .parse()
            .map_err(|e| bad("EMAILVERIFY_GRPC_ADDR", format!("{e} (want host:port)")))?;
        let http_addr = self
            .http_addr
            .parse()
            .map_err(|e| bad("EMAILVERIFY_HTTP_ADDR", format!("{e} (want host:port)")))?;
        let public = url::Url::parse(&self.public_url)
            .map_err(|e| bad("EMAILVERIFY_PUBLIC_URL", e.to_string()))?;
        if !matches!(public.scheme(), "http" | "https") || public.query().is_some() {
            return Err(bad(
                "EMAILVERIFY_PUBLIC_URL",
                "must be an http(s) URL without a query",
            ));
        }
        if let Some(s) = &self.success_url {
            url::Url::parse(s).map_err(|e| bad("EMAILVERIFY_SUCCESS_URL", e.to_string()))?;
        }
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            return Err(bad("DATABASE_URL", "use sqlite://… or postgres://…"));
        }
        let transport =
            Transport::from_url(&self.mail_url).map_err(|m| bad("EMAILVERIFY_MAIL_URL", m))?;
        let mail_from = self
            .mail_from
            .parse()
            .map_err(|e| bad("EMAILVERIFY_MAIL_FROM", format!("{e}")))?;
        let keys = match &self.token_keys {
            Some(list) => Keyring::from_base64_list(list)
                .map_err(|e| bad("EMAILVERIFY_TOKEN_KEYS", e.to_string()))?,
            None => generated_key(&self.data_dir)?,
        };
        let duration = |raw: &str, name: &'static str| {
            humantime::parse_duration(raw.trim())
                .map_err(|e| bad(name, format!("{e} (e.g. 90s, 15m, 2h)")))
        };
        let positive = |raw: &str, name: &'static str| {
            let d = duration(raw, name)?;
            if d.is_zero() {
                Err(bad(name, "must be longer than 0s"))
            } else {
                Ok(d)
            }
        };
        let mail_max_attempts: i32 = self
            .mail_max_attempts
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                bad(
                    "EMAILVERIFY_MAIL_MAX_ATTEMPTS",
                    "must be a whole number, at least 1",
                )
            })?;
        let api_tokens: Vec<String> = self
            .api_tokens
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        if self.api_tokens.is_some() && api_tokens.is_empty() {
            return Err(bad(
                "EMAILVERIFY_API_TOKENS",
                "set but empty: unset it to disable authentication",
            ));
        }
        if !matches!(self.log_format.as_str(), "pretty" | "json") {
            return Err(bad("EMAILVERIFY_LOG_FORMAT", "use pretty or json"));
        }
        let rate = |raw: &str, name: &'static str| Rate::parse(raw).map_err(|e| bad(name, e));
        let client_ip_header = match &self.client_ip_header {
            Some(h) => Some(
                axum::http::HeaderName::try_from(h.trim())
                    .map_err(|e| bad("EMAILVERIFY_CLIENT_IP_HEADER", e.to_string()))?,
            ),
            None => None,
        };
        let read = |path: &PathBuf, name: &'static str| {
            std::fs::read(path).map_err(|e| bad(name, format!("{}: {e}", path.display())))
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert_pem: read(cert, "EMAILVERIFY_TLS_CERT")?,
                key_pem: read(key, "EMAILVERIFY_TLS_KEY")?,
                client_ca_pem: match &self.tls_client_ca {
                    Some(ca) => Some(read(ca, "EMAILVERIFY_TLS_CLIENT_CA")?),
                    None => None,
                },
            }),
            (None, None) if self.tls_client_ca.is_some() => {
                return Err(bad(
                    "EMAILVERIFY_TLS_CLIENT_CA",
                    "needs EMAILVERIFY_TLS_CERT and EMAILVERIFY_TLS_KEY",
                ));
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(
                    "EMAILVERIFY_TLS_KEY",
                    "EMAILVERIFY_TLS_CERT is set without it",
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    "EMAILVERIFY_TLS_CERT",
                    "EMAILVERIFY_TLS_KEY is set without it",
                ));
            }
        };
        Ok(Config {
            database_url: self.database_url.clone(),
            grpc_addr,
            http_addr,
            policy: Policy {
                verify_ttl: positive(&self.verify_ttl, "EMAILVERIFY_VERIFY_TTL")?,
                change_ttl: positive(&self.change_ttl, "EMAILVERIFY_CHANGE_TTL")?,
                resend_cooldown: duration(&self.resend_cooldown, "EMAILVERIFY_RESEND_COOLDOWN")?,
                public_url: self.public_url.trim_end_matches('/').to_owned(),
                user_rate: rate(&self.limit_per_user, "EMAILVERIFY_LIMIT_PER_USER")?,
                recipient_rate: rate(&self.limit_per_recipient, "EMAILVERIFY_LIMIT_PER_RECIPIENT")?,
                ip_failure_rate: rate(
                    &self.limit_failed_confirms_per_ip,
                    "EMAILVERIFY_LIMIT_FAILED_CONFIRMS_PER_IP",
                )?,
                change_freeze: duration(&self.change_freeze, "EMAILVERIFY_CHANGE_FREEZE")?,
                support_contact: self.support_contact.trim().to_owned(),
            },
            transport,
            mail_from,
            keys,
            api_tokens,
            success_url: self.success_url.clone(),
            client_ip_header,
            tls,
            retry: RetryPolicy {
                base: positive(&self.mail_retry_base, "EMAILVERIFY_MAIL_RETRY_BASE")?,
                max_attempts: mail_max_attempts,
                lease: positive(&self.mail_lease, "EMAILVERIFY_MAIL_LEASE")?,
                ..RetryPolicy::default()
            },
            shutdown_timeout: positive(&self.shutdown_timeout, "EMAILVERIFY_SHUTDOWN_TIMEOUT")?,
            db_pool: self
                .db_pool
                .trim()
                .parse()
                .ok()
                .filter(|n| (2..=1000).contains(n))
                .ok_or_else(|| bad("EMAILVERIFY_DB_POOL", "a whole number from 2 to 1000"))?,
        })
    }
}

/// The embedded default: a key generated once into the data folder (mode 0600), so links
/// keep working across restarts. Production sets EMAILVERIFY_TOKEN_KEYS from a secret.
fn generated_key(dir: &std::path::Path) -> Result<Keyring, SettingError> {
    let setting = "EMAILVERIFY_TOKEN_KEYS";
    let path = dir.join("token.key");
    let key = match std::fs::read_to_string(&path) {
        Ok(k) => {
            tracing::warn!(path = %path.display(), "EMAILVERIFY_TOKEN_KEYS is unset: using the generated token key; set the variable in production");
            k
        }
        Err(_) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| bad(setting, format!("cannot create {}: {e}", dir.display())))?;
            let k = Keyring::generate_key_base64();
            write_private(&path, &k)
                .map_err(|e| bad(setting, format!("cannot write {}: {e}", path.display())))?;
            tracing::warn!(path = %path.display(), "EMAILVERIFY_TOKEN_KEYS is unset: generated a token key; set the variable in production");
            k
        }
    };
    Keyring::from_base64_list(key.trim())
        .map_err(|e| bad(setting, format!("{}: {e}", path.display())))
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
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
        let cases: [(Tweak, &str); 16] = [
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
}
