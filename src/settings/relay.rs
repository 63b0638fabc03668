//! Settings of the SMTP relay beyond `EMAILVERIFY_MAIL_URL`: extra trusted CAs and DKIM.

use std::path::PathBuf;

use super::SettingError;

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

/// The relay settings, checked.
#[derive(Clone, Debug, Default)]
pub struct RelayConfig {
    pub mail_ca: Option<PathBuf>,
    pub dkim_key: Option<PathBuf>,
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
        Ok(RelayConfig {
            mail_ca: self.mail_ca.clone(),
            dkim_key: self.dkim_key.clone(),
            dkim_selector: self.dkim_selector.clone(),
        })
    }
}
