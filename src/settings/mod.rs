//! Settings: every variable of the contract, also a `--flag` of `emailverify serve`
//! (clap reads both). Raw strings are parsed once, here, into typed values; a bad value
//! stops the start with a message that names the setting.

//!
//! `mod.rs` declares the settings (and shows them without secrets); `config.rs` parses
//! them into the `Config` the application is built from.

mod bounces;
mod config;
mod error;
mod relay;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use bounces::{BounceConfig, BounceSettings, InboundTls};
pub use config::{Config, Connections, FeedLimits, Retention, TlsConfig};
pub use error::SettingError;
pub use relay::{RelayConfig, RelaySettings};

/// `Debug` is written by hand (below): it never shows a key, a token or a password.
#[derive(Clone, clap::Args)]
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
    /// Where /metrics, /healthz and /readyz listen for operators (never the public port).
    #[arg(long, env = "EMAILVERIFY_ADMIN_ADDR", default_value = "127.0.0.1:9464")]
    pub admin_addr: String,
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
    /// Unset: a built-in success page; set (an http(s) URL): 303 there after a confirmation.
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
    /// Wrong codes per user across all its flows (ConfirmCode), `N/period`; then every
    /// code is RATE_LIMITED until the bucket allows one more.
    #[arg(
        long,
        env = "EMAILVERIFY_MAX_WRONG_CODES_PER_USER",
        default_value = "10/1d"
    )]
    pub max_wrong_codes_per_user: String,
    /// How long RequestChange is refused after a "this wasn't me" report of a change.
    #[arg(long, env = "EMAILVERIFY_CHANGE_FREEZE", default_value = "24h")]
    pub change_freeze: String,
    /// How people reach support (e.g. `help@wallet.example`, a phone number): the change
    /// notice names it. Empty: the notice points to Help in the wallet app only.
    #[arg(long, env = "EMAILVERIFY_SUPPORT_CONTACT", default_value = "")]
    pub support_contact: String,
    /// The time zone in which mails and pages write times (an IANA name, e.g.
    /// `Asia/Kathmandu`).
    #[arg(long, env = "EMAILVERIFY_TIME_ZONE", default_value = "UTC")]
    pub time_zone: String,
    /// The language of the mails of a flow requested with an empty `locale` (`en` or
    /// `ne`); its pages follow the browser's Accept-Language.
    #[arg(long, env = "EMAILVERIFY_DEFAULT_LOCALE", default_value = "en")]
    pub default_locale: String,
    /// How many proxies in front of the HTTP port append to X-Forwarded-For: the client is
    /// the entry that many places from the right (across all lines of the header). 0: the
    /// TCP peer address.
    #[arg(long, env = "EMAILVERIFY_TRUSTED_PROXIES", default_value = "0")]
    pub trusted_proxies: String,
    /// A client must send its request headers (HTTP) or its first HTTP/2 frame (gRPC)
    /// within this long of connecting; HTTP: also of its previous response.
    #[arg(long, env = "EMAILVERIFY_HEADER_TIMEOUT", default_value = "10s")]
    pub header_timeout: String,
    /// A gRPC connection with no call in flight for this long is closed.
    #[arg(long, env = "EMAILVERIFY_IDLE_TIMEOUT", default_value = "60s")]
    pub idle_timeout: String,
    /// Most connections open at once on each of the gRPC and HTTP ports; past it, new ones
    /// wait in the kernel's queue.
    #[arg(long, env = "EMAILVERIFY_MAX_CONNECTIONS", default_value = "1024")]
    pub max_connections: String,
    /// Most gRPC connections open at once from one peer address (open streams count too).
    #[arg(
        long,
        env = "EMAILVERIFY_MAX_CONNECTIONS_PER_PEER",
        default_value = "64"
    )]
    pub max_connections_per_peer: String,
    /// Most HTTP connections from one peer address that have not yet been answered once
    /// (kept-alive ones that have are not counted: many people share one address). Not
    /// applied with EMAILVERIFY_TRUSTED_PROXIES set: the peer is then the proxy.
    #[arg(
        long,
        env = "EMAILVERIFY_HTTP_MAX_PENDING_PER_PEER",
        default_value = "64"
    )]
    pub http_max_pending_per_peer: String,
    /// Most calls (HTTP/2 streams) in flight at once on one gRPC connection.
    #[arg(long, env = "EMAILVERIFY_GRPC_MAX_STREAMS", default_value = "100")]
    pub grpc_max_streams: String,
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
    /// Sent and dead mails are deleted this long after they were queued.
    #[arg(long, env = "EMAILVERIFY_RETAIN_MAIL", default_value = "7d")]
    pub retain_mail: String,
    /// Events, and flows that ended, are deleted this long after.
    #[arg(long, env = "EMAILVERIFY_RETAIN_EVENTS", default_value = "400d")]
    pub retain_events: String,
    /// A NATS server with JetStream to publish the change feed to (unset: off), e.g.
    /// `nats://127.0.0.1:4222`.
    #[arg(long, env = "EMAILVERIFY_EVENTS_NATS_URL")]
    pub events_nats_url: Option<String>,
    /// Most WatchEvents watchers open at once in this process; past it RESOURCE_EXHAUSTED
    /// TOO_MANY_WATCHERS.
    #[arg(long, env = "EMAILVERIFY_MAX_WATCHERS", default_value = "256")]
    pub max_watchers: String,
    /// A watcher that reads nothing for this long while events wait is closed (it resumes
    /// from its cursor). Tests shorten it; not for operators.
    #[arg(
        long,
        env = "EMAILVERIFY_WATCHER_IDLE_TIMEOUT",
        default_value = "60s",
        hide = true
    )]
    pub watcher_idle_timeout: String,
    /// How often each replica prunes (also once at start).
    #[arg(long, env = "EMAILVERIFY_RETENTION_EVERY", default_value = "10m")]
    pub retention_every: String,
    /// PostgreSQL: `on` runs sign-ups, changes and link confirmations optimistically
    /// first (a read, then one guarded statement; `store/optimistic.rs`); `off` runs them
    /// under the user's lock only. `off` during a rolling upgrade from a release without
    /// `users.version` (docs/deploy.md), whose locks the optimistic guard cannot see.
    #[arg(long, env = "EMAILVERIFY_OPTIMISTIC", default_value = "on")]
    pub optimistic: String,
    /// The support console on the admin port (`/support/`): unset, off (404);
    /// `header:<Header-Name>`, the agent's name from that header, set by an
    /// authenticating proxy in front; `tokens`, agents sign in with EMAILVERIFY_SUPPORT_TOKENS.
    #[arg(long, env = "EMAILVERIFY_SUPPORT_AUTH")]
    pub support_auth: Option<String>,
    /// The support agents, `name:token,…` (with EMAILVERIFY_SUPPORT_AUTH=tokens; tokens of
    /// at least 16 characters; only their digests are kept).
    #[arg(long, env = "EMAILVERIFY_SUPPORT_TOKENS", hide_env_values = true)]
    pub support_tokens: Option<String>,
    /// Log format: `pretty` or `json`.
    #[arg(long, env = "EMAILVERIFY_LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
    #[command(flatten)]
    pub relay: RelaySettings,
    #[command(flatten)]
    pub bounces: BounceSettings,
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

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Settings")
            .field("database_url", &without_password(&self.database_url))
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("admin_addr", &self.admin_addr)
            .field("public_url", &self.public_url)
            .field("mail_url", &without_password(&self.mail_url))
            .field("mail_from", &self.mail_from)
            .field("token_keys", &secret(&self.token_keys))
            .field("api_tokens", &secret(&self.api_tokens))
            .field("verify_ttl", &self.verify_ttl)
            .field("change_ttl", &self.change_ttl)
            .field("resend_cooldown", &self.resend_cooldown)
            .field("success_url", &self.success_url)
            .field("limit_per_user", &self.limit_per_user)
            .field("limit_per_recipient", &self.limit_per_recipient)
            .field(
                "limit_failed_confirms_per_ip",
                &self.limit_failed_confirms_per_ip,
            )
            .field("max_wrong_codes_per_user", &self.max_wrong_codes_per_user)
            .field("change_freeze", &self.change_freeze)
            .field("support_contact", &self.support_contact)
            .field("time_zone", &self.time_zone)
            .field("default_locale", &self.default_locale)
            .field("retain_mail", &self.retain_mail)
            .field("retain_events", &self.retain_events)
            .field("retention_every", &self.retention_every)
            .field("max_watchers", &self.max_watchers)
            .field("watcher_idle_timeout", &self.watcher_idle_timeout)
            .field(
                "events_nats_url",
                &self.events_nats_url.as_deref().map(without_password),
            )
            .field("trusted_proxies", &self.trusted_proxies)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
            .field("http_max_pending_per_peer", &self.http_max_pending_per_peer)
            .field("grpc_max_streams", &self.grpc_max_streams)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("data_dir", &self.data_dir)
            .field("mail_retry_base", &self.mail_retry_base)
            .field("mail_max_attempts", &self.mail_max_attempts)
            .field("db_pool", &self.db_pool)
            .field("optimistic", &self.optimistic)
            .field("mail_lease", &self.mail_lease)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("support_auth", &self.support_auth)
            .field("support_tokens", &secret(&self.support_tokens))
            .field("log_format", &self.log_format)
            .field("relay", &self.relay)
            .field("bounces", &self.bounces)
            .finish()
    }
}

impl Settings {
    /// EMAILVERIFY_SUPPORT_AUTH and EMAILVERIFY_SUPPORT_TOKENS, parsed.
    fn support(&self) -> Result<crate::http::support::SupportAuth, SettingError> {
        crate::http::support::SupportAuth::parse(
            self.support_auth.as_deref(),
            self.support_tokens.as_deref(),
        )
        .map_err(|(setting, message)| SettingError { setting, message })
    }
}

/// A URL as it may be shown: its password (in the userinfo or a `password=` query
/// parameter) replaced. Something that is not a URL is shown as it is only if it cannot
/// hold one (`log`, a bare path); else it is hidden whole.
fn without_password(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return if raw.contains('@') || raw.contains("password") {
            "<redacted>".into()
        } else {
            raw.to_owned()
        };
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("redacted"));
    }
    if url
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "redacted".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}
