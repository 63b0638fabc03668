//! Settings of bounce and complaint handling: the envelope sender, the inbound SMTP
//! listener (its per-peer bound, its silence deadline, STARTTLS), and how long a bounced
//! address stays suppressed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::error::SettingError;

#[derive(Clone, Debug, clap::Args)]
pub struct BounceSettings {
    /// Envelope sender of every mail, tagged per mail (`bounces+<tag>@…`, the tag a MAC of
    /// the mail). Unset: the From.
    #[arg(long, env = "EMAILVERIFY_BOUNCE_ADDRESS")]
    pub bounce_address: Option<String>,
    /// Where the inbound SMTP listener for bounces and complaints listens. Unset: off.
    #[arg(long, env = "EMAILVERIFY_INBOUND_ADDR")]
    pub inbound_addr: Option<String>,
    /// Most inbound SMTP sessions one peer address (IPv6: its /64) holds at once; the next
    /// is answered 421 and closed.
    #[arg(
        long,
        env = "EMAILVERIFY_INBOUND_MAX_SESSIONS_PER_PEER",
        default_value = "8"
    )]
    pub inbound_max_sessions_per_peer: String,
    /// An inbound session that makes no progress (a command that moves a report along)
    /// for this long is closed. For tests; the contract's value is the default.
    #[arg(
        long,
        env = "EMAILVERIFY_INBOUND_SILENCE_TIMEOUT",
        default_value = "30s",
        hide = true
    )]
    pub inbound_silence_timeout: String,
    /// PEM certificate chain: the inbound listener offers STARTTLS with it.
    #[arg(long, env = "EMAILVERIFY_INBOUND_TLS_CERT")]
    pub inbound_tls_cert: Option<PathBuf>,
    /// PEM private key of EMAILVERIFY_INBOUND_TLS_CERT.
    #[arg(long, env = "EMAILVERIFY_INBOUND_TLS_KEY")]
    pub inbound_tls_key: Option<PathBuf>,
    /// How long a bounced address stays suppressed.
    #[arg(long, env = "EMAILVERIFY_SUPPRESSION_TTL", default_value = "14d")]
    pub suppression_ttl: String,
}

/// The bounce settings, checked.
#[derive(Clone, Debug)]
pub struct BounceConfig {
    pub bounce_address: Option<lettre::Address>,
    pub inbound_addr: Option<SocketAddr>,
    pub inbound_max_sessions_per_peer: usize,
    pub inbound_silence_timeout: Duration,
    /// Set: the listener offers STARTTLS with this certificate.
    pub inbound_tls: Option<InboundTls>,
    pub suppression_ttl: Duration,
}

/// The inbound listener's TLS set-up, read and checked at start.
#[derive(Clone)]
pub struct InboundTls(pub Arc<rustls::ServerConfig>);

impl std::fmt::Debug for InboundTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InboundTls(<certificate and key>)")
    }
}

/// The longest local part an address may have (RFC 5321 4.5.3.1.1).
const MAX_LOCAL_PART: usize = 64;

impl BounceSettings {
    pub fn resolve(&self) -> Result<BounceConfig, SettingError> {
        let bad = |setting: &'static str, message: String| SettingError { setting, message };
        let bounce_address: Option<lettre::Address> = match &self.bounce_address {
            Some(a) => Some(
                a.trim()
                    .parse()
                    .map_err(|e| bad("EMAILVERIFY_BOUNCE_ADDRESS", format!("{e}")))?,
            ),
            None => None,
        };
        if let Some(a) = &bounce_address {
            let base = a.user().split_once('+').map_or(a.user(), |(b, _)| b);
            let most = MAX_LOCAL_PART - 1 - crate::mail::message::TAG_LEN;
            if base.len() > most {
                return Err(bad(
                    "EMAILVERIFY_BOUNCE_ADDRESS",
                    format!(
                        "its local part may have at most {most} characters: each mail's tag \
                         ({} characters) goes after a '+', and a local part has at most {MAX_LOCAL_PART}",
                        crate::mail::message::TAG_LEN
                    ),
                ));
            }
        }
        let inbound_addr =
            match &self.inbound_addr {
                Some(a) => Some(a.parse().map_err(|e| {
                    bad("EMAILVERIFY_INBOUND_ADDR", format!("{e} (want host:port)"))
                })?),
                None => None,
            };
        if inbound_addr.is_some() && bounce_address.is_none() {
            return Err(bad(
                "EMAILVERIFY_INBOUND_ADDR",
                "needs EMAILVERIFY_BOUNCE_ADDRESS: the listener takes mail for that address only"
                    .into(),
            ));
        }
        let inbound_max_sessions_per_peer = self
            .inbound_max_sessions_per_peer
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                bad(
                    "EMAILVERIFY_INBOUND_MAX_SESSIONS_PER_PEER",
                    format!(
                        "{:?}: want a whole number from 1 to 1000",
                        self.inbound_max_sessions_per_peer
                    ),
                )
            })?;
        let inbound_silence_timeout = humantime::parse_duration(&self.inbound_silence_timeout)
            .map_err(|e| e.to_string())
            .and_then(|d| {
                (Duration::from_millis(100)..=Duration::from_secs(600))
                    .contains(&d)
                    .then_some(d)
                    .ok_or_else(|| "want 100ms to 10m".to_owned())
            })
            .map_err(|e| bad("EMAILVERIFY_INBOUND_SILENCE_TIMEOUT", e))?;
        let inbound_tls = match (&self.inbound_tls_cert, &self.inbound_tls_key) {
            (Some(cert), Some(key)) => Some(InboundTls(server_config(cert, key)?)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(
                    "EMAILVERIFY_INBOUND_TLS_KEY",
                    "needed with EMAILVERIFY_INBOUND_TLS_CERT".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    "EMAILVERIFY_INBOUND_TLS_CERT",
                    "needed with EMAILVERIFY_INBOUND_TLS_KEY".into(),
                ));
            }
        };
        let suppression_ttl = humantime::parse_duration(&self.suppression_ttl)
            .map_err(|e| bad("EMAILVERIFY_SUPPRESSION_TTL", e.to_string()))?;
        Ok(BounceConfig {
            bounce_address,
            inbound_addr,
            inbound_max_sessions_per_peer,
            inbound_silence_timeout,
            inbound_tls,
            suppression_ttl,
        })
    }
}

/// The listener's TLS from its PEM files; an unreadable file, or a key that does not fit
/// the certificate, names its setting.
fn server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, SettingError> {
    let cert_err = |e: String| SettingError {
        setting: "EMAILVERIFY_INBOUND_TLS_CERT",
        message: format!("{}: {e}", cert.display()),
    };
    let key_err = |e: String| SettingError {
        setting: "EMAILVERIFY_INBOUND_TLS_KEY",
        message: format!("{}: {e}", key.display()),
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| key_err(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| key_err(format!("does not fit the certificate: {e}")))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(bounce: Option<&str>, inbound: Option<&str>, ttl: &str) -> BounceSettings {
        BounceSettings {
            bounce_address: bounce.map(str::to_owned),
            inbound_addr: inbound.map(str::to_owned),
            suppression_ttl: ttl.into(),
            ..crate::settings::Settings::default().bounces
        }
    }

    #[test]
    fn the_listener_needs_a_bounce_address_and_errors_name_the_setting() {
        let ok = settings(
            Some("bounces@mail.wallet.example"),
            Some("127.0.0.1:2525"),
            "14d",
        )
        .resolve()
        .unwrap();
        assert_eq!(ok.suppression_ttl, Duration::from_secs(14 * 24 * 3600));
        let err = settings(None, Some("127.0.0.1:2525"), "14d")
            .resolve()
            .unwrap_err();
        assert_eq!(err.setting, "EMAILVERIFY_INBOUND_ADDR");
        let err = settings(Some("not an address"), None, "14d")
            .resolve()
            .unwrap_err();
        assert_eq!(err.setting, "EMAILVERIFY_BOUNCE_ADDRESS");
        let err = settings(None, None, "soon").resolve().unwrap_err();
        assert_eq!(err.setting, "EMAILVERIFY_SUPPRESSION_TTL");
    }

    #[test]
    fn the_listener_defaults_to_8_sessions_a_peer_and_30_s_of_silence() {
        let ok = settings(None, None, "14d").resolve().unwrap();
        assert_eq!(ok.inbound_max_sessions_per_peer, 8);
        assert_eq!(ok.inbound_silence_timeout, Duration::from_secs(30));
        assert!(ok.inbound_tls.is_none());
        for (field, value, setting) in [
            (0, "0", "EMAILVERIFY_INBOUND_MAX_SESSIONS_PER_PEER"),
            (0, "many", "EMAILVERIFY_INBOUND_MAX_SESSIONS_PER_PEER"),
            (1, "never", "EMAILVERIFY_INBOUND_SILENCE_TIMEOUT"),
            (1, "1h", "EMAILVERIFY_INBOUND_SILENCE_TIMEOUT"),
        ] {
            let mut s = settings(None, None, "14d");
            if field == 0 {
                s.inbound_max_sessions_per_peer = value.into();
            } else {
                s.inbound_silence_timeout = value.into();
            }
            assert_eq!(s.resolve().unwrap_err().setting, setting, "{value}");
        }
    }

    #[test]
    fn tls_files_that_hold_no_certificate_or_key_name_their_setting() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a PEM file").unwrap();
        let mut s = settings(None, None, "14d");
        s.inbound_tls_cert = Some(junk.clone());
        s.inbound_tls_key = Some(junk);
        assert_eq!(
            s.resolve().unwrap_err().setting,
            "EMAILVERIFY_INBOUND_TLS_CERT"
        );
    }

    #[test]
    fn tls_needs_both_readable_files_and_a_tagged_bounce_address_fits_64() {
        let mut s = settings(None, None, "14d");
        s.inbound_tls_cert = Some("/nonexistent/cert.pem".into());
        assert_eq!(
            s.resolve().unwrap_err().setting,
            "EMAILVERIFY_INBOUND_TLS_KEY"
        );
        s.inbound_tls_key = Some("/nonexistent/key.pem".into());
        assert_eq!(
            s.resolve().unwrap_err().setting,
            "EMAILVERIFY_INBOUND_TLS_CERT"
        );
        // 11 characters + '+' + the 52 of a tag = 64.
        assert!(
            settings(Some("bounces1234@mail.wallet.example"), None, "14d")
                .resolve()
                .is_ok()
        );
        let err = settings(Some("bounces12345@mail.wallet.example"), None, "14d")
            .resolve()
            .unwrap_err();
        assert_eq!(err.setting, "EMAILVERIFY_BOUNCE_ADDRESS");
    }
}
