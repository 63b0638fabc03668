//! DKIM signing of every outgoing mail (`EMAILVERIFY_DKIM_KEY`, `EMAILVERIFY_DKIM_SELECTOR`):
//! the key is read and checked at start, and each composed message is signed with
//! d = the From address's domain.
//!
//! lettre's signer takes RSA keys as PKCS#1 PEM and Ed25519 keys as the base64 of the
//! 32-byte seed; operators have PEM files (`openssl genpkey` writes PKCS#8), so those are
//! turned into lettre's forms here.

use std::fmt;
use std::path::Path;

use base64::Engine;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _, LineEnding};
use rsa::traits::PublicKeyParts as _;

/// RFC 8301: verifiers refuse RSA keys under 1024 bits.
const MIN_RSA_BITS: usize = 1024;

/// The headers every signature covers (all are on every mail we compose). Listing each
/// name once more than it occurs (RFC 6376 §5.4.2) is left out: lettre signs one instance.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Auto-Submitted",
];

/// A checked DKIM key and its selector, in the form lettre's signer takes.
#[derive(Clone)]
pub struct DkimKey {
    selector: String,
    algorithm: DkimSigningAlgorithm,
    /// PKCS#1 PEM (RSA) or the base64 seed (Ed25519).
    key: String,
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimKey")
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl DkimKey {
    /// Reads and checks the PEM file at `path`: RSA as PKCS#1 (`BEGIN RSA PRIVATE KEY`) or
    /// PKCS#8 (`BEGIN PRIVATE KEY`), Ed25519 as PKCS#8.
    pub fn load(path: &Path, selector: &str) -> Result<Self, String> {
        check_selector(selector)?;
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let key = Self::from_pem(pem.trim(), selector)?;
        // What lettre will be given must be what it takes.
        key.signing_key()?;
        Ok(key)
    }

    fn from_pem(pem: &str, selector: &str) -> Result<Self, String> {
        let rsa = if pem.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
            Some(
                rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                    .map_err(|e| format!("not a readable RSA (PKCS#1) private key: {e}"))?,
            )
        } else if pem.starts_with("-----BEGIN PRIVATE KEY-----") {
            use rsa::pkcs8::DecodePrivateKey as _;
            // Not RSA: Ed25519, tried below.
            rsa::RsaPrivateKey::from_pkcs8_pem(pem).ok()
        } else if pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err("the key is encrypted; give an unencrypted PEM key".into());
        } else {
            return Err(
                "not a PEM private key (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY expected)"
                    .into(),
            );
        };
        if let Some(rsa) = rsa {
            rsa.validate()
                .map_err(|e| format!("the RSA key is not valid: {e}"))?;
            let bits = rsa.size() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "the RSA key has {bits} bits; DKIM needs at least {MIN_RSA_BITS} (2048 advised)"
                ));
            }
            let pkcs1 = rsa
                .to_pkcs1_pem(LineEnding::LF)
                .map_err(|e| format!("the RSA key cannot be encoded: {e}"))?;
            return Ok(Self {
                selector: selector.to_owned(),
                algorithm: DkimSigningAlgorithm::Rsa,
                key: pkcs1.to_string(),
            });
        }
        let ed = ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| "BEGIN PRIVATE KEY holds neither an RSA nor an Ed25519 key".to_string())?;
        Ok(Self {
            selector: selector.to_owned(),
            algorithm: DkimSigningAlgorithm::Ed25519,
            key: base64::engine::general_purpose::STANDARD.encode(ed.to_bytes()),
        })
    }

    fn signing_key(&self) -> Result<DkimSigningKey, String> {
        DkimSigningKey::new(&self.key, self.algorithm)
            .map_err(|e| format!("the key is refused by the signer: {e}"))
    }

    /// The signing configuration for mail from `domain` (ASCII: an IDN as its A-label).
    pub fn config(&self, domain: &str) -> Result<DkimConfig, String> {
        Ok(DkimConfig::new(
            self.selector.clone(),
            domain.to_owned(),
            self.signing_key()?,
            SIGNED_HEADERS
                .iter()
                .map(|name| HeaderName::new_from_ascii_str(name))
                .collect(),
            // relaxed/relaxed survives relays that refold headers or trim spaces.
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        ))
    }
}

/// A selector is one or more DNS labels (`s1`, `mail.2026`).
fn check_selector(selector: &str) -> Result<(), String> {
    let ok = !selector.is_empty()
        && selector.len() <= 253
        && selector.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "EMAILVERIFY_DKIM_SELECTOR {selector:?} is not a DNS name (letters, digits, '-', '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
        let path = dir.path().join("dkim.pem");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn bad_keys_and_selectors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = write(
            &dir,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        assert!(DkimKey::load(&garbage, "s1").is_err());
        let not_pem = write(&dir, "hello");
        assert!(DkimKey::load(&not_pem, "s1").is_err());
        assert!(DkimKey::load(&dir.path().join("missing.pem"), "s1").is_err());
        let ed = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let pem = {
            use ed25519_dalek::pkcs8::EncodePrivateKey as _;
            ed.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
        };
        let good = write(&dir, &pem);
        let key = DkimKey::load(&good, "s1").unwrap();
        assert!(
            !format!("{key:?}").contains(&key.key),
            "Debug hides the key"
        );
        assert!(key.config("wallet.example").is_ok());
        for selector in ["", "a b", "-x", "s1.", "s;1"] {
            assert!(DkimKey::load(&good, selector).is_err(), "{selector:?}");
        }
    }
}
