//! Where mail goes, from `EMAILVERIFY_MAIL_URL`:
//! - `smtp://host:port` plain SMTP (a local relay), `smtp://…?tls=starttls` STARTTLS
//!   required, `smtps://user:pass@host:465` implicit TLS; credentials in the URL's userinfo;
//! - `file://dir` writes one `.eml` file per mail (the embedded default);
//! - `log` only logs that a mail would be sent (masked recipient, never the body).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{
    self, RootCertStore, pki_types::CertificateDer, pki_types::pem::PemObject,
};

use super::smtp::{Cause, Connection, Failure, Relay, Security};

/// What the relay needs beyond its URL (from `EMAILVERIFY_MAIL_CA`, `EMAILVERIFY_DKIM_*`).
#[derive(Clone, Debug, Default)]
pub struct RelayConfig {
    /// A PEM file of extra CAs trusted for the relay's certificate.
    pub mail_ca: Option<std::path::PathBuf>,
    /// The checked DKIM key and selector: every mail is signed with it.
    pub dkim: Option<super::dkim::DkimKey>,
}

/// Mails one worker hands over at once. Each SMTP exchange mostly waits on the network,
/// so the worker sends this many concurrently and the SMTP pool keeps as many connections.
pub const SENDS_IN_FLIGHT: usize = 16;
/// A pooled connection idle longer than this is closed rather than reused (relays end idle
/// sessions after a minute or more; RFC 5321 asks them to wait five).
const MAX_IDLE: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub enum Transport {
    Smtp(Arc<SmtpPool>),
    File(AsyncFileTransport<Tokio1Executor>, PathBuf),
    Log,
}

/// A delivery failure, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// A 5xx reply: retrying will not help.
    pub permanent: bool,
    /// No SMTP reply at all (connection refused, reset, timed out), or the relay cannot be
    /// used (TLS, STARTTLS missing, AUTH refused): not this message's fault.
    pub unreachable: bool,
    /// The relay's reply (code and text, addresses masked) or what went wrong.
    pub message: String,
}

impl Transport {
    /// Parses the mail URL; the error names what is wrong (never echoing a password).
    pub fn from_url(raw: &str, relay: &RelayConfig) -> Result<Self, String> {
        if raw == "log" {
            return Ok(Transport::Log);
        }
        if let Some(path) = raw.strip_prefix("file://") {
            if path.is_empty() {
                return Err("file:// needs a directory, e.g. file://data/outbox".into());
            }
            let dir = PathBuf::from(path);
            return Ok(Transport::File(AsyncFileTransport::new(&dir), dir));
        }
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
        let host = match url.host().ok_or("the URL has no host")? {
            url::Host::Domain(d) => d.to_string(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let (security, port) = match (url.scheme(), tls.as_deref()) {
            ("smtps", None) => (Security::Implicit, 465),
            ("smtp", Some("starttls")) => (Security::StartTls, 587),
            ("smtp", None | Some("none")) => (Security::Plain, 25),
            ("smtp" | "smtps", Some(other)) => {
                return Err(format!(
                    "unknown tls={other}: use tls=starttls, or smtps:// for implicit TLS"
                ));
            }
            (scheme, _) => {
                return Err(format!(
                    "unknown scheme {scheme}: use smtp, smtps, file or log"
                ));
            }
        };
        let credentials = (!url.username().is_empty()).then(|| {
            let user = percent_decode(url.username());
            let pass = percent_decode(url.password().unwrap_or(""));
            (user, pass)
        });
        if credentials.is_some() && security == Security::Plain {
            return Err(
                "credentials are never sent in the clear: use smtps:// or ?tls=starttls".into(),
            );
        }
        let tls = match security {
            Security::Plain => None,
            _ => Some(tls_connector(relay.mail_ca.as_deref())?),
        };
        Ok(Transport::Smtp(Arc::new(SmtpPool {
            relay: Relay {
                host,
                port: url.port().unwrap_or(port),
                security,
                credentials,
                tls,
                timeout: Duration::from_secs(20),
            },
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(SENDS_IN_FLIGHT),
        })))
    }

    /// Prepares what the transport needs on disk (the .eml folder).
    pub async fn prepare(&self) -> std::io::Result<()> {
        if let Transport::File(_, dir) = self {
            tokio::fs::create_dir_all(dir).await?;
        }
        Ok(())
    }

    /// Whether mail can be handed over now: the SMTP server answers (EHLO, and the TLS
    /// and login it is configured for), or the .eml folder is writable.
    pub async fn check(&self) -> Result<(), String> {
        match self {
            Transport::Smtp(pool) => {
                let conn = Connection::open(&pool.relay).await.map_err(|f| f.detail)?;
                conn.quit().await;
                Ok(())
            }
            Transport::File(_, dir) => {
                self.prepare()
                    .await
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                let probe = dir.join(".emailverify-check");
                tokio::fs::write(&probe, b"ok")
                    .await
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                let _ = tokio::fs::remove_file(&probe).await;
                Ok(())
            }
            Transport::Log => Ok(()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::Smtp(_) => "smtp".into(),
            Transport::File(_, dir) => format!("file://{}", dir.display()),
            Transport::Log => "log".into(),
        }
    }

    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        match self {
            Transport::Smtp(pool) => {
                let body = message.formatted();
                pool.send(message.envelope(), &body)
                    .await
                    .map(|_| ())
                    .map_err(send_error)
            }
            Transport::File(t, _) => t.send(message).await.map(|_| ()).map_err(|e| SendError {
                permanent: false,
                unreachable: true,
                message: format!("file transport: {e}"),
            }),
            Transport::Log => {
                tracing::info!("mail transport is `log`: mail not delivered");
                Ok(())
            }
        }
    }
}

/// Up to [`SENDS_IN_FLIGHT`] connections to the relay, kept open between mails.
pub struct SmtpPool {
    relay: Relay,
    idle: Mutex<Vec<Connection>>,
    /// One per send in flight: at most that many connections exist.
    slots: Semaphore,
}

impl SmtpPool {
    /// Sends on an idle connection if there is one, else on a new one. A reused connection
    /// found dead before the relay acknowledged anything is replaced once, at no risk of a
    /// duplicate (the message never went).
    async fn send(&self, envelope: &lettre::address::Envelope, body: &[u8]) -> Result<(), Failure> {
        let _slot = self.slots.acquire().await.map_err(|_| Failure {
            cause: Cause::Network,
            detail: "smtp pool closed".into(),
            stale: false,
        })?;
        if let Some(mut conn) = self.take_idle() {
            match conn.send(envelope, body).await {
                Err(f) if f.stale => {}
                result => {
                    self.put_back(conn);
                    return result.map(|_| ());
                }
            }
        }
        let mut conn = Connection::open(&self.relay).await.inspect_err(|f| {
            // Why no mail goes (a certificate, STARTTLS, AUTH): the worker only says that
            // the relay is unreachable.
            tracing::warn!(error = %f.detail, "cannot use the mail relay");
        })?;
        let result = conn.send(envelope, body).await;
        self.put_back(conn);
        result.map(|_| ())
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(conn) = idle.pop() {
            if conn.last_used.elapsed() < MAX_IDLE {
                return Some(conn);
            }
            tokio::spawn(conn.quit());
        }
        None
    }

    fn put_back(&self, conn: Connection) {
        if !conn.broken
            && let Ok(mut idle) = self.idle.lock()
        {
            idle.push(conn);
        }
    }
}

/// The retry policy's view of a failure: no reply, or a relay we cannot use, holds the mail
/// without using its attempts; a 5xx refusal of the message is permanent.
fn send_error(f: Failure) -> SendError {
    let (permanent, unreachable) = match &f.cause {
        Cause::Network | Cause::Setup(_) => (false, true),
        Cause::Refused(reply) => (reply.code >= 500, false),
        Cause::Unsupported => (false, false),
    };
    SendError {
        permanent,
        unreachable,
        message: f.detail,
    }
}

/// TLS to the relay: its certificate must chain to the system's roots or to
/// `EMAILVERIFY_MAIL_CA`'s.
fn tls_connector(mail_ca: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    let (added, _) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let mut extra = 0;
    if let Some(path) = mail_ca {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("EMAILVERIFY_MAIL_CA {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("EMAILVERIFY_MAIL_CA {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("EMAILVERIFY_MAIL_CA {}: {e}", path.display()))?;
            extra += 1;
        }
        if extra == 0 {
            return Err(format!(
                "EMAILVERIFY_MAIL_CA {}: no certificate in it",
                path.display()
            ));
        }
    }
    if added + extra == 0 {
        return Err(
            "no trusted roots for the relay's certificate: install the system's CA certificates or set EMAILVERIFY_MAIL_CA".into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        assert!(matches!(
            Transport::from_url("log", &RelayConfig::default()),
            Ok(Transport::Log)
        ));
        assert!(matches!(
            Transport::from_url("file://data/outbox", &RelayConfig::default()),
            Ok(Transport::File(..))
        ));
        assert!(matches!(
            Transport::from_url("smtp://127.0.0.1:2525", &RelayConfig::default()),
            Ok(Transport::Smtp(_))
        ));
        assert!(matches!(
            Transport::from_url(
                "smtp://mx.example.com:587?tls=starttls",
                &RelayConfig::default()
            ),
            Ok(Transport::Smtp(_))
        ));
        assert!(matches!(
            Transport::from_url(
                "smtps://user:p%40ss@mx.example.com:465",
                &RelayConfig::default()
            ),
            Ok(Transport::Smtp(_))
        ));
    }

    #[test]
    fn rejects_what_it_cannot_honour_without_echoing_secrets() {
        for bad in [
            "ftp://x",
            "smtp://x?tls=maybe",
            "file://",
            "not a url",
            // AUTH is never sent in the clear.
            "smtp://user:pass@mx.example.com:25",
        ] {
            assert!(
                Transport::from_url(bad, &RelayConfig::default()).is_err(),
                "{bad}"
            );
        }
        let err = Transport::from_url("smtpx://user:hunter2@x", &RelayConfig::default())
            .err()
            .unwrap();
        assert!(!err.contains("hunter2"));
    }
}
