//! `Settings` → `Config`: every raw string parsed once into its typed value; the first
//! bad one stops the start with a message that names the setting.

use lettre::message::Mailbox;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Settings;
use super::error::{SettingError, bad};
use crate::core::Policy;
use crate::domain::{Keyring, Rate};
use crate::mail::outbox::RetryPolicy;
use crate::mail::transport::Transport;

/// Settings after parsing: what the application is built from.
#[derive(Clone)]
pub struct Config {
    pub database_url: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub policy: Policy,
    pub transport: Transport,
    pub mail_from: Mailbox,
    pub keys: Keyring,
    pub api_tokens: Vec<String>,
    /// An http(s) URL (checked): where a confirmation redirects.
    pub success_url: Option<url::Url>,
    pub retry: RetryPolicy,
    pub shutdown_timeout: std::time::Duration,
    pub db_pool: u32,
    /// PostgreSQL: the hot use-cases try optimistically first (`store::Store::attempts`).
    pub optimistic: bool,
    /// Proxies in front of the HTTP port that append to X-Forwarded-For (0: none).
    pub trusted_proxies: usize,
    pub connections: Connections,
    pub tls: Option<TlsConfig>,
    pub relay: super::RelayConfig,
    pub bounces: super::BounceConfig,
    /// Where the times in mails and pages are written for.
    pub time_zone: jiff::tz::TimeZone,
    /// The language of the mails of a flow that chose none.
    pub default_locale: crate::domain::Locale,
    pub retention: Retention,
    /// Where the change feed is published (NATS JetStream), if anywhere.
    pub events_nats_url: Option<String>,
    pub feed: FeedLimits,
    /// Who may enter the support console (off unless set).
    pub support: crate::http::support::SupportAuth,
}

/// What WatchEvents watchers may hold.
#[derive(Clone, Debug)]
pub struct FeedLimits {
    /// Watchers open at once in the process.
    pub max_watchers: usize,
    /// A watcher that takes nothing for this long while events wait is closed.
    pub watcher_idle: Duration,
}

/// How long old rows stay, and how often they are pruned.
#[derive(Clone, Debug)]
pub struct Retention {
    pub retain_mail: Duration,
    pub retain_events: Duration,
    pub every: Duration,
}

/// How long a connection may take and how many there may be (both public ports).
#[derive(Clone, Debug)]
pub struct Connections {
    /// To send the request headers (HTTP) or the first HTTP/2 frame (gRPC).
    pub header_timeout: Duration,
    /// A gRPC connection with no call in flight is closed after this.
    pub idle_timeout: Duration,
    /// Open at once, per port.
    pub max_connections: usize,
    /// gRPC: open at once from one peer address.
    pub max_per_peer: usize,
    /// HTTP: open from one peer address and not yet answered once.
    pub http_pending_per_peer: usize,
    /// Calls in flight at once on one gRPC connection.
    pub grpc_max_streams: u32,
}

/// gRPC TLS material, read at start.
#[derive(Clone)]
pub struct TlsConfig {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Set: clients must present a certificate signed by this CA.
    pub client_ca_pem: Option<Vec<u8>>,
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
        let admin_addr = self
            .admin_addr
            .parse()
            .map_err(|e| bad("EMAILVERIFY_ADMIN_ADDR", format!("{e} (want host:port)")))?;
        let public = url::Url::parse(&self.public_url)
            .map_err(|e| bad("EMAILVERIFY_PUBLIC_URL", e.to_string()))?;
        if !matches!(public.scheme(), "http" | "https") || public.query().is_some() {
            return Err(bad(
                "EMAILVERIFY_PUBLIC_URL",
                "must be an http(s) URL without a query",
            ));
        }
        let success_url = match &self.success_url {
            Some(s) => Some(success_url(s)?),
            None => None,
        };
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres"))
        {
            return Err(bad("DATABASE_URL", "use sqlite://… or postgres://…"));
        }
        let transport = Transport::from_url(&self.mail_url, &self.relay.resolve()?)
            .map_err(|m| bad("EMAILVERIFY_MAIL_URL", m))?;
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
        let whole = |raw: &str, name: &'static str, range: std::ops::RangeInclusive<u64>| {
            raw.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    bad(
                        name,
                        format!("a whole number from {} to {}", range.start(), range.end()),
                    )
                })
        };
        let trusted_proxies = whole(&self.trusted_proxies, "EMAILVERIFY_TRUSTED_PROXIES", 0..=16)?;
        let connections = Connections {
            header_timeout: positive(&self.header_timeout, "EMAILVERIFY_HEADER_TIMEOUT")?,
            idle_timeout: positive(&self.idle_timeout, "EMAILVERIFY_IDLE_TIMEOUT")?,
            max_connections: whole(
                &self.max_connections,
                "EMAILVERIFY_MAX_CONNECTIONS",
                1..=1_000_000,
            )? as usize,
            max_per_peer: whole(
                &self.max_connections_per_peer,
                "EMAILVERIFY_MAX_CONNECTIONS_PER_PEER",
                1..=1_000_000,
            )? as usize,
            http_pending_per_peer: whole(
                &self.http_max_pending_per_peer,
                "EMAILVERIFY_HTTP_MAX_PENDING_PER_PEER",
                1..=1_000_000,
            )? as usize,
            grpc_max_streams: whole(
                &self.grpc_max_streams,
                "EMAILVERIFY_GRPC_MAX_STREAMS",
                1..=10_000,
            )? as u32,
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
            support: self.support()?,
            database_url: self.database_url.clone(),
            grpc_addr,
            http_addr,
            admin_addr,
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
                wrong_code_rate: rate(
                    &self.max_wrong_codes_per_user,
                    "EMAILVERIFY_MAX_WRONG_CODES_PER_USER",
                )?,
                change_freeze: duration(&self.change_freeze, "EMAILVERIFY_CHANGE_FREEZE")?,
                support_contact: self.support_contact.trim().to_owned(),
            },
            optimistic: match self.optimistic.trim() {
                "on" => true,
                "off" => false,
                _ => return Err(bad("EMAILVERIFY_OPTIMISTIC", "on or off")),
            },
            transport,
            mail_from,
            keys,
            api_tokens,
            success_url,
            trusted_proxies: trusted_proxies as usize,
            connections,
            tls,
            relay: self.relay.resolve()?,
            bounces: self.bounces.resolve()?,
            retry: RetryPolicy {
                base: positive(&self.mail_retry_base, "EMAILVERIFY_MAIL_RETRY_BASE")?,
                max_attempts: mail_max_attempts,
                lease: positive(&self.mail_lease, "EMAILVERIFY_MAIL_LEASE")?,
                ..RetryPolicy::default()
            },
            shutdown_timeout: positive(&self.shutdown_timeout, "EMAILVERIFY_SHUTDOWN_TIMEOUT")?,
            events_nats_url: self
                .events_nats_url
                .as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
            feed: FeedLimits {
                max_watchers: whole(&self.max_watchers, "EMAILVERIFY_MAX_WATCHERS", 1..=100_000)?
                    as usize,
                watcher_idle: positive(
                    &self.watcher_idle_timeout,
                    "EMAILVERIFY_WATCHER_IDLE_TIMEOUT",
                )?,
            },
            retention: Retention {
                retain_mail: positive(&self.retain_mail, "EMAILVERIFY_RETAIN_MAIL")?,
                retain_events: positive(&self.retain_events, "EMAILVERIFY_RETAIN_EVENTS")?,
                every: positive(&self.retention_every, "EMAILVERIFY_RETENTION_EVERY")?,
            },
            default_locale: crate::domain::Locale::supported(&self.default_locale)
                .filter(|l| l.as_tag().eq_ignore_ascii_case(self.default_locale.trim()))
                .ok_or_else(|| bad("EMAILVERIFY_DEFAULT_LOCALE", "en or ne"))?,
            time_zone: jiff::tz::TimeZone::get(self.time_zone.trim()).map_err(|_| {
                bad(
                    "EMAILVERIFY_TIME_ZONE",
                    "an IANA time zone name, e.g. UTC or Asia/Kathmandu",
                )
            })?,
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

/// EMAILVERIFY_SUCCESS_URL: an absolute http(s) URL with a host. Anything else (a relative
/// path, `javascript:`, `data:`) would be a redirect no browser should be sent to, and its
/// origin could not be allowed in the pages' `form-action`.
fn success_url(raw: &str) -> Result<url::Url, SettingError> {
    let setting = "EMAILVERIFY_SUCCESS_URL";
    let url = url::Url::parse(raw.trim()).map_err(|e| bad(setting, e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad(setting, "must be an http:// or https:// URL"));
    }
    // Its origin goes into the pages' Content-Security-Policy: nothing there may end a
    // source expression or a directive.
    let origin = url.origin().ascii_serialization();
    if !origin
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":/.-[]".contains(&b))
    {
        return Err(bad(
            setting,
            format!("the host of {origin} is not a plain host name"),
        ));
    }
    Ok(url)
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
