//! Settings of the SMTP relay beyond `EMAILVERIFY_MAIL_URL`: extra trusted CAs and DKIM.

use std::path::PathBuf;

use super::SettingError;
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
        // Declared by the contract, not built yet: refusing beats sending unsigned mail
        // to an operator who believes it is signed.
        if self.dkim_key.is_some() {
            return Err(SettingError {
                setting: "EMAILVERIFY_DKIM_KEY",
                message: "DKIM signing is not available in this version; unset it (and EMAILVERIFY_DKIM_SELECTOR)".into(),
            });
        }
        Ok(RelayConfig {
            mail_ca: self.mail_ca.clone(),
            dkim_key: self.dkim_key.clone(),
            dkim_selector: self.dkim_selector.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dkim_key_is_refused_rather_than_ignored() {
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
