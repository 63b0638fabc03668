//! Settings of the SMTP relay beyond `EMAILVERIFY_MAIL_URL`: extra trusted CAs and DKIM.

use std::path::PathBuf;

use super::error::SettingError;
use crate::mail::dkim::DkimKey;
pub use crate::mail::transport::RelayConfig;

#[derive(Clone, Debug, Default, clap::Args)]
pub struct RelaySettings {
    /// PEM file of extra CAs trusted for the relay's certificate (default: the system's roots).
    #[arg(long, env = "EMAILVERIFY_MAIL_CA")]
    pub mail_ca: Option<PathBuf>,
    /// PEM private key (RSA or Ed25519) to DKIM-sign every mail; domain = the From domain.
    #[arg(long, env = "EMAILVERIFY_DKIM_KEY")]
    pub dkim_key: Option<PathBuf>,
    /// The DKIM selector (required with EMAILVERIFY_DKIM_KEY).
    #[arg(long, env = "EMAILVERIFY_DKIM_SELECTOR")]
    pub dkim_selector: Option<String>,
}

impl RelaySettings {
    pub fn resolve(&self) -> Result<RelayConfig, SettingError> {
        if self.dkim_key.is_some() != self.dkim_selector.is_some() {
            return Err(SettingError {
                setting: "EMAILVERIFY_DKIM_SELECTOR",
                message: "EMAILVERIFY_DKIM_KEY and EMAILVERIFY_DKIM_SELECTOR go together".into(),
            });
        }
        // Read and checked now: a key that cannot sign stops the start rather than
        // letting mail go out unsigned to an operator who believes it is signed.
        let dkim = match (&self.dkim_key, &self.dkim_selector) {
            (Some(path), Some(selector)) => Some(DkimKey::load(path, selector).map_err(
                |message| SettingError {
                    setting: "EMAILVERIFY_DKIM_KEY",
                    message,
                },
            )?),
            _ => None,
        };
        Ok(RelayConfig {
            mail_ca: self.mail_ca.clone(),
            dkim,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_dkim_key_stops_the_start_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("dkim.pem");
        std::fs::write(
            &bad,
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        for path in [bad, dir.path().join("missing.pem")] {
            let settings = RelaySettings {
                dkim_key: Some(path),
                dkim_selector: Some("s1".into()),
                ..RelaySettings::default()
            };
            assert_eq!(
                settings.resolve().unwrap_err().setting,
                "EMAILVERIFY_DKIM_KEY"
            );
        }
        let settings = RelaySettings {
            dkim_key: Some("dkim.pem".into()),
            dkim_selector: Some("s1".into()),
            ..RelaySettings::default()
        };
        assert_eq!(
            settings.resolve().unwrap_err().setting,
            "EMAILVERIFY_DKIM_KEY"
        );
        let half = RelaySettings {
            dkim_selector: Some("s1".into()),
            ..RelaySettings::default()
        };
        assert!(half.resolve().is_err());
        assert!(RelaySettings::default().resolve().is_ok());
    }
}
