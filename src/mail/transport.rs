//! Where mail goes, from `EMAILVERIFY_MAIL_URL`:
//! - `smtp://host:port` plain SMTP (a local relay), `smtp://…?tls=starttls` STARTTLS
//!   required, `smtps://user:pass@host:465` implicit TLS; credentials in the URL's userinfo;
//! - `file://dir` writes one `.eml` file per mail (the embedded default);
//! - `log` only logs that a mail would be sent (masked recipient, never the body).

use std::path::PathBuf;
use std::time::Duration;

use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Mails one worker hands over at once. Each SMTP exchange mostly waits on the network,
/// so the worker sends this many concurrently and the SMTP pool keeps as many connections.
pub const SENDS_IN_FLIGHT: usize = 16;

#[derive(Clone)]
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>, PathBuf),
    Log,
}

/// A delivery failure, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// A 5xx reply: retrying will not help.
    pub permanent: bool,
    /// No SMTP reply at all (connection refused, reset, timed out): the server is down,
    /// which is not this message's fault.
    pub unreachable: bool,
    pub message: String,
}

impl Transport {
    /// Parses the mail URL; the error names what is wrong (never echoing a password).
    pub fn from_url(raw: &str) -> Result<Self, String> {
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
        let host = url.host_str().ok_or("the URL has no host")?.to_owned();
        let tls = url
            .query_pairs()
            .find(|(k, _)| k == "tls")
            .map(|(_, v)| v.into_owned());
        let builder = match (url.scheme(), tls.as_deref()) {
            ("smtps", None) => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
                .map_err(|e| format!("TLS set-up failed: {e}"))?
                .port(url.port().unwrap_or(465)),
            ("smtp", Some("starttls")) => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                    .map_err(|e| format!("TLS set-up failed: {e}"))?
                    .port(url.port().unwrap_or(587))
            }
            ("smtp", None | Some("none")) => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
                    .port(url.port().unwrap_or(25))
            }
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
        // One pooled connection per send in flight.
        let pool = PoolConfig::new().max_size(SENDS_IN_FLIGHT as u32);
        let mut builder = builder
            .timeout(Some(Duration::from_secs(20)))
            .pool_config(pool);
        if !url.username().is_empty() {
            let user = percent_decode(url.username());
            let pass = percent_decode(url.password().unwrap_or(""));
            builder = builder.credentials(Credentials::new(user, pass));
        }
        Ok(Transport::Smtp(builder.build()))
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
            Transport::Smtp(t) => match t.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => Err("the SMTP server did not accept a connection".into()),
                Err(e) => Err(smtp_error_summary(&e)),
            },
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
            Transport::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| SendError {
                permanent: e.is_permanent(),
                unreachable: e.status().is_none(),
                message: smtp_error_summary(&e),
            }),
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

/// The SMTP reply code and lettre's kind of error: enough to act on, nothing personal.
fn smtp_error_summary(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) => format!("smtp reply {code}"),
        None if e.is_timeout() => "smtp timeout".into(),
        None => format!("smtp: {e}"),
    }
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

    // The SMTP connection pool needs a Tokio runtime, as in the service.
    #[tokio::test]
    async fn parses_every_documented_form() {
        assert!(matches!(Transport::from_url("log"), Ok(Transport::Log)));
        assert!(matches!(
            Transport::from_url("file://data/outbox"),
            Ok(Transport::File(..))
        ));
        assert!(matches!(
            Transport::from_url("smtp://127.0.0.1:2525"),
            Ok(Transport::Smtp(_))
        ));
        assert!(matches!(
            Transport::from_url("smtp://mx.example.com:587?tls=starttls"),
            Ok(Transport::Smtp(_))
        ));
        assert!(matches!(
            Transport::from_url("smtps://user:p%40ss@mx.example.com:465"),
            Ok(Transport::Smtp(_))
        ));
    }

    #[tokio::test]
    async fn rejects_what_it_cannot_honour_without_echoing_secrets() {
        for bad in ["ftp://x", "smtp://x?tls=maybe", "file://", "not a url"] {
            assert!(Transport::from_url(bad).is_err(), "{bad}");
        }
        let err = Transport::from_url("smtpx://user:hunter2@x").err().unwrap();
        assert!(!err.contains("hunter2"));
    }
}
