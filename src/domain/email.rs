//! `EmailAddress`: a parsed and normalised address.
//!
//! Normalisation (API.md): trimmed, domain lower-cased and converted to ASCII with IDNA,
//! at most 254 characters. The local part keeps what the user typed: RFC 5321 says it is
//! the receiving server's to interpret. Which inbox it reaches is its `mailbox_key`
//! (`mailbox.rs`).
//!
//! What no relay should be asked to deliver is refused here (API.md, "Addresses: one
//! inbox, one key"):
//! - the local part must be a dot-atom (RFC 5322; RFC 6531 adds any non-ASCII
//!   character): no quoted strings, at most 64 octets;
//! - a local part with non-ASCII characters must be "moderately restrictive" or stricter
//!   under Unicode TR39 (`unicode-security`): one script, or Latin plus one other
//!   recommended script that is neither Cyrillic nor Greek, and only characters of
//!   TR39's identifier profile (letters, digits and combining marks of scripts in use;
//!   no symbols, no compatibility forms). ASCII punctuation of the dot-atom is set aside
//!   for that judgement (it belongs to no script). So `नमस्ते` passes, `jаne` with a
//!   Cyrillic `а` does not;
//! - the domain must be a host name: no address literal (`[…]`), at least one dot, every
//!   label letters, digits and inner hyphens (1 to 63 of them), and a top-level label that
//!   is not all digits (so no IPv4 address, RFC 3696 §2).
//!
//! An address with an ASCII local part is also checked by `lettre::Address`, the parser
//! that addresses the mail; a non-ASCII one is handed to lettre unchecked
//! (`to_lettre`), since lettre's own check refuses combining marks such as the virama
//! of `नमस्ते`.

pub use super::mask::{mask, mask_apart};
use std::fmt;
use std::str::FromStr;

use unicode_security::{RestrictionLevel, RestrictionLevelDetection};

use super::mailbox::MailboxKey;

/// The longest address a mail path can carry (RFC 5321 path limit minus the brackets).
pub const MAX_LEN: usize = 254;
/// The longest local part, in octets (RFC 5321 §4.5.3.1.1; RFC 6531 keeps it).
pub const MAX_LOCAL_LEN: usize = 64;
/// The least restrictive TR39 restriction level a non-ASCII local part may have.
const LOCAL_PART_LEVEL: RestrictionLevel = RestrictionLevel::ModeratelyRestrictive;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the address is empty")]
    Empty,
    #[error("the address is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("the address is not of the form local@domain")]
    Syntax,
    #[error("the domain is not a valid internationalised domain name")]
    Domain,
    #[error("the part before @ is longer than {MAX_LOCAL_LEN} bytes")]
    LocalTooLong,
    #[error("quoted local parts are not accepted")]
    Quoted,
    #[error("address literals ([…]) are not accepted: the domain must be a host name")]
    AddressLiteral,
    #[error("the domain must be a host name, not a number or an IP address")]
    NumericDomain,
    #[error("the domain has a label that is not a host name (letters, digits, inner hyphens)")]
    HostName,
    #[error("the part before @ mixes scripts or uses characters not allowed in names")]
    MixedScripts,
}

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(EmailError::Empty);
        }
        // Bound the work done on hostile input before any parsing.
        if raw.len() > MAX_LEN * 4 {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = raw.rsplit_once('@').ok_or(EmailError::Syntax)?;
        if local.is_empty() || domain.is_empty() || raw.chars().any(|c| c.is_control()) {
            return Err(EmailError::Syntax);
        }
        if local.starts_with('"') {
            return Err(EmailError::Quoted);
        }
        if domain.starts_with('[') {
            return Err(EmailError::AddressLiteral);
        }
        // UTS 46 processing lower-cases and maps the domain, then converts it to ASCII.
        let ascii_domain = idna::domain_to_ascii(domain).map_err(|_| EmailError::Domain)?;
        if ascii_domain.is_empty() || !ascii_domain.contains('.') || ascii_domain.ends_with('.') {
            return Err(EmailError::Domain);
        }
        check_host_name(&ascii_domain)?;
        let normalised = format!("{local}@{ascii_domain}");
        if normalised.len() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        check_local_part(local)?;
        if local.is_ascii() {
            // Let lettre's parser judge the syntax of the whole, normalised address.
            lettre::Address::from_str(&normalised).map_err(|_| EmailError::Syntax)?;
        }
        Ok(Self(normalised))
    }

    /// Rebuilds an address that was normalised before it was stored.
    pub fn from_trusted(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The inbox this address reaches (see `mailbox.rs`).
    pub fn mailbox_key(&self) -> MailboxKey {
        MailboxKey::of(&self.0)
    }

    /// The address for lettre, to mail it as stored. `None` if it would not parse today
    /// (a stored value from before a rule was added may not).
    pub fn to_lettre(&self) -> Option<lettre::Address> {
        if let Ok(address) = lettre::Address::from_str(&self.0) {
            return Some(address);
        }
        // lettre refuses some non-ASCII local parts that RFC 6531 allows (combining
        // marks); ours were judged by `parse`, which is asked again here.
        let parsed = Self::parse(&self.0).ok()?;
        let (local, domain) = parsed.0.rsplit_once('@')?;
        Some(lettre::Address::new_dangerous(local, domain))
    }

    /// `j***@example.com`: the local part's first character, `***`, `@`, the whole domain.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// A dot-atom (RFC 5322 §3.2.3 with RFC 6531's non-ASCII characters), at most 64 octets,
/// and, when it is not ASCII, of one script in TR39's sense (see the module doc).
fn check_local_part(local: &str) -> Result<(), EmailError> {
    if local.len() > MAX_LOCAL_LEN {
        return Err(EmailError::LocalTooLong);
    }
    if local.contains('"') {
        return Err(EmailError::Quoted);
    }
    let atoms_ok = local.split('.').all(|atom| {
        !atom.is_empty()
            && atom.chars().all(|c| {
                if c.is_ascii() {
                    is_ascii_atext(c)
                } else {
                    !c.is_whitespace()
                }
            })
    });
    if !atoms_ok {
        return Err(EmailError::Syntax);
    }
    if !local.is_ascii() {
        // The dot-atom's ASCII punctuation has no script and is not in the identifier
        // profile: it is judged above, and left out here.
        let scripted: String = local
            .chars()
            .filter(|c| !c.is_ascii() || c.is_ascii_alphanumeric())
            .collect();
        if !scripted.as_str().check_restriction_level(LOCAL_PART_LEVEL) {
            return Err(EmailError::MixedScripts);
        }
    }
    Ok(())
}

/// RFC 5322 `atext`, ASCII part.
fn is_ascii_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// Every label of the ASCII domain a host name label (RFC 1123: letters, digits, inner
/// hyphens, 1 to 63 octets), and the top-level one not all digits.
fn check_host_name(ascii_domain: &str) -> Result<(), EmailError> {
    let labels: Vec<&str> = ascii_domain.split('.').collect();
    for label in &labels {
        let ldh = label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if label.is_empty()
            || label.len() > 63
            || !ldh
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(EmailError::HostName);
        }
    }
    let top = labels.last().copied().unwrap_or_default();
    if top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EmailError::NumericDomain);
    }
    Ok(())
}

/// Addresses are personal data: even debug output shows only the masked form.
impl fmt::Debug for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_the_domain_and_keeps_the_local_part() {
        let cases = [
            ("  Jane.Doe@Example.COM ", "Jane.Doe@example.com"),
            ("a@b.co", "a@b.co"),
            ("user@bücher.example", "user@xn--bcher-kva.example"),
            ("user@BÜCHER.example", "user@xn--bcher-kva.example"),
        ];
        for (raw, want) in cases {
            assert_eq!(EmailAddress::parse(raw).unwrap().as_str(), want, "{raw}");
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        let too_long = format!("{}@example.com", "a".repeat(250));
        let long_local = format!("{}@example.com", "a".repeat(65));
        let cases: [(&str, EmailError); 10] = [
            ("", EmailError::Empty),
            ("   ", EmailError::Empty),
            ("no-at-sign", EmailError::Syntax),
            ("@example.com", EmailError::Syntax),
            ("user@", EmailError::Syntax),
            ("us er@example.com", EmailError::Syntax),
            ("user@localhost", EmailError::Domain),
            (&too_long, EmailError::TooLong),
            (&long_local, EmailError::LocalTooLong),
            ("user@exa\u{0}mple.com", EmailError::Syntax),
        ];
        for (raw, want) in cases {
            assert_eq!(EmailAddress::parse(raw).unwrap_err(), want, "{raw:?}");
        }
    }

    /// API.md: what no relay should be asked to deliver is INVALID_EMAIL at request time.
    #[test]
    fn refuses_what_no_relay_should_be_asked_to_deliver() {
        let cases = [
            // Quoted local parts.
            ("\"jane\"@example.com", EmailError::Quoted),
            ("\"ja ne\"@example.com", EmailError::Quoted),
            ("\"j@ne\"@example.com", EmailError::Quoted),
            ("ja\"ne@example.com", EmailError::Quoted),
            // Address literals.
            ("jane@[127.0.0.1]", EmailError::AddressLiteral),
            ("jane@[IPv6:::1]", EmailError::AddressLiteral),
            // All-numeric domains (and numeric top-level labels).
            ("jane@127.0.0.1", EmailError::NumericDomain),
            ("jane@10.0.0.5", EmailError::NumericDomain),
            ("jane@example.123", EmailError::NumericDomain),
            // No dot.
            ("jane@example", EmailError::Domain),
            ("jane@com", EmailError::Domain),
            // Labels that are not host names.
            ("jane@_.example.com", EmailError::HostName),
            ("jane@my_host.example.com", EmailError::HostName),
            ("jane@-example.com", EmailError::HostName),
            ("jane@example-.com", EmailError::HostName),
            ("jane@example..com", EmailError::HostName),
            // Local parts that are not dot-atoms.
            (".jane@example.com", EmailError::Syntax),
            ("jane.@example.com", EmailError::Syntax),
            ("ja..ne@example.com", EmailError::Syntax),
            ("ja(ne)@example.com", EmailError::Syntax),
            ("ja\\ne@example.com", EmailError::Syntax),
            ("ja\u{a0}ne@example.com", EmailError::Syntax),
            // Mixed scripts (TR39 moderately restrictive): a Cyrillic а among Latin.
            ("j\u{430}ne@example.com", EmailError::MixedScripts),
            ("p\u{430}ypal@example.com", EmailError::MixedScripts),
            // Latin with Greek, Devanagari with Cyrillic.
            ("jane\u{3b1}@example.com", EmailError::MixedScripts),
            ("नमस्ते\u{43f}@example.com", EmailError::MixedScripts),
            // Characters outside TR39's identifier profile: symbols, compatibility forms,
            // invisible ones.
            ("jane\u{2122}@example.com", EmailError::MixedScripts),
            ("\u{ff4a}ane@example.com", EmailError::MixedScripts),
            ("ja\u{200b}ne@example.com", EmailError::MixedScripts),
            ("jane\u{1f600}@example.com", EmailError::MixedScripts),
        ];
        for (raw, want) in cases {
            assert_eq!(EmailAddress::parse(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn accepts_one_script_and_latin_with_one_recommended_script() {
        let cases = [
            // One non-Latin script, combining marks included (RFC 6531).
            "नमस्ते@example.com",
            "नमस्ते.दुनिया+tag@example.com",
            "ваня@example.com",
            "οδος@example.com",
            "用户@example.com",
            "ユーザー@example.com",
            // Latin alone, with diacritics, composed or not.
            "josé@example.com",
            "jose\u{301}@example.com",
            "straße@example.com",
            // Latin plus one recommended script other than Cyrillic and Greek.
            "jane.नमस्ते@example.com",
            "jane田中@example.com",
            // ASCII atext and sub-addresses.
            "jane.doe+wallet@example.com",
            "o'brien@example.com",
            "a!#$%&'*+-/=?^_`{|}~z@example.com",
            "+1555@example.com",
            // Host names: digits and hyphens inside, IDNA.
            "jane@123.example.com",
            "jane@mail-1.example.co",
            "jane@xn--bcher-kva.example",
            "jane@bücher.example",
        ];
        for raw in cases {
            let parsed = EmailAddress::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert!(parsed.to_lettre().is_some(), "{raw} cannot be mailed");
        }
    }

    #[test]
    fn the_address_is_kept_as_typed_and_mailed_as_typed() {
        let a = EmailAddress::parse(" नमस्ते@EXAMPLE.com").unwrap();
        assert_eq!(a.as_str(), "नमस्ते@example.com");
        let to = a.to_lettre().unwrap();
        assert_eq!((to.user(), to.domain()), ("नमस्ते", "example.com"));
        let b = EmailAddress::parse("Jane.Doe+Wallet@GoogleMail.com").unwrap();
        assert_eq!(b.as_str(), "Jane.Doe+Wallet@googlemail.com");
        assert_eq!(b.mailbox_key().as_str(), "janedoe@gmail.com");
        assert_eq!(b.to_lettre().unwrap().to_string(), b.as_str());
    }

    #[test]
    fn masks_as_the_contract_says() {
        let a = EmailAddress::parse("jane@example.com").unwrap();
        assert_eq!(a.masked(), "j***@example.com");
        assert_eq!(format!("{a:?}"), "EmailAddress(j***@example.com)");
    }

    proptest! {
        #[test]
        fn never_panics_and_output_is_a_fixed_point(raw in "\\PC{0,300}") {
            if let Ok(a) = EmailAddress::parse(&raw) {
                prop_assert!(a.as_str().len() <= MAX_LEN);
                let again = EmailAddress::parse(a.as_str()).unwrap();
                prop_assert_eq!(again, a);
            }
        }

        /// Address-shaped input, far more often accepted than the above: what is accepted
        /// is stable, can be mailed, and its key is stable too.
        #[test]
        fn accepted_addresses_are_stable_mailable_and_keyed(
            local in "[a-zA-Z0-9.+_\\-éßаαनमस्तेि]{1,20}",
            domain in "(example\\.com|gmail\\.com|GoogleMail\\.com|bücher\\.example|[a-z0-9_\\-]{1,8}\\.[a-z0-9]{1,4})",
        ) {
            if let Ok(a) = EmailAddress::parse(&format!("{local}@{domain}")) {
                prop_assert_eq!(EmailAddress::parse(a.as_str()), Ok(a.clone()));
                prop_assert!(a.to_lettre().is_some());
                let key = a.mailbox_key();
                prop_assert_eq!(MailboxKey::of(key.as_str()), key);
            }
        }
    }
}
