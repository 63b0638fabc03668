//! `EmailAddress`: a parsed and normalised address.
//!
//! Normalisation (API.md): trimmed, domain lower-cased and converted to ASCII with IDNA,
//! at most 254 characters. The local part keeps its case: RFC 5321 says it is the
//! receiving server's to interpret. Syntax checking is `lettre::Address`'s (the same
//! parser that will later address the mail), so what we accept we can also send to.

use std::fmt;
use std::str::FromStr;

/// The longest address a mail path can carry (RFC 5321 path limit minus the brackets).
pub const MAX_LEN: usize = 254;

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
        // UTS 46 processing lower-cases and maps the domain, then converts it to ASCII.
        let ascii_domain = idna::domain_to_ascii(domain).map_err(|_| EmailError::Domain)?;
        if ascii_domain.is_empty() || !ascii_domain.contains('.') || ascii_domain.ends_with('.') {
            return Err(EmailError::Domain);
        }
        let normalised = format!("{local}@{ascii_domain}");
        if normalised.len() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        // Let lettre's parser judge the syntax of the whole, normalised address.
        lettre::Address::from_str(&normalised).map_err(|_| EmailError::Syntax)?;
        Ok(Self(normalised))
    }

    /// Rebuilds an address that was normalised before it was stored.
    pub fn from_trusted(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `j***@example.com`: the local part's first character, `***`, `@`, the whole domain.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

/// Masks a stored address; a value without `@` is masked completely.
pub fn mask(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
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
        let cases: [(&str, EmailError); 8] = [
            ("", EmailError::Empty),
            ("   ", EmailError::Empty),
            ("no-at-sign", EmailError::Syntax),
            ("@example.com", EmailError::Syntax),
            ("user@", EmailError::Syntax),
            ("us er@example.com", EmailError::Syntax),
            ("user@localhost", EmailError::Domain),
            (&too_long, EmailError::TooLong),
        ];
        for (raw, want) in cases {
            assert_eq!(EmailAddress::parse(raw).unwrap_err(), want, "{raw:?}");
        }
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
    }
}
