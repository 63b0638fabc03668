//! Settings of bounce and complaint handling: the envelope sender, the inbound SMTP
//! listener, and how long a bounced address stays suppressed.

use std::net::SocketAddr;
use std::time::Duration;

use super::SettingError;

#[derive(Clone, Debug, clap::Args)]
pub struct BounceSettings {
    /// Envelope sender of every mail, tagged per mail (`bounces+<id>@…`). Unset: the From.
    #[arg(long, env = "EMAILVERIFY_BOUNCE_ADDRESS")]
    pub bounce_address: Option<String>,
    /// Where the inbound SMTP listener for bounces and complaints listens. Unset: off.
    #[arg(long, env = "EMAILVERIFY_INBOUND_ADDR")]
    pub inbound_addr: Option<String>,
    /// How long a bounced address stays suppressed.
    #[arg(long, env = "EMAILVERIFY_SUPPRESSION_TTL", default_value = "14d")]
    pub suppression_ttl: String,
}

/// The bounce settings, checked.
#[derive(Clone, Debug)]
pub struct BounceConfig {
    pub bounce_address: Option<lettre::Address>,
    pub inbound_addr: Option<SocketAddr>,
    pub suppression_ttl: Duration,
}

impl BounceSettings {
    pub fn resolve(&self) -> Result<BounceConfig, SettingError> {
        let bad = |setting: &'static str, message: String| SettingError { setting, message };
        let bounce_address = match &self.bounce_address {
            Some(a) => Some(
                a.trim()
                    .parse()
                    .map_err(|e| bad("EMAILVERIFY_BOUNCE_ADDRESS", format!("{e}")))?,
            ),
            None => None,
        };
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
        let suppression_ttl = humantime::parse_duration(&self.suppression_ttl)
            .map_err(|e| bad("EMAILVERIFY_SUPPRESSION_TTL", e.to_string()))?;
        Ok(BounceConfig {
            bounce_address,
            inbound_addr,
            suppression_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(bounce: Option<&str>, inbound: Option<&str>, ttl: &str) -> BounceSettings {
        BounceSettings {
            bounce_address: bounce.map(str::to_owned),
            inbound_addr: inbound.map(str::to_owned),
            suppression_ttl: ttl.into(),
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
}
