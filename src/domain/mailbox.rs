//! `MailboxKey`: which inbox an address reaches, so that variants of one inbox count as
//! one (API.md, "Addresses: one inbox, one key"). The key decides EMAIL_TAKEN (the
//! database's unique index is on it) and the per-recipient limit; the address itself is
//! still stored, shown and mailed as the user typed it.
//!
//! The key of `local@domain`:
//! - the domain as stored (already lower-cased and IDNA to ASCII by `EmailAddress::parse`);
//! - the local part NFKC-normalised, fully case-folded (Unicode's default case folding,
//!   the C+F mappings of CaseFolding.txt, from ICU4X) and NFKC-normalised again, which is
//!   Unicode's `toNFKC_Casefold` up to default-ignorable code points (the parser refuses
//!   those in local parts);
//! - a `+tag` sub-address removed (from the first `+` on; a local part that *starts* with
//!   `+` has no tag, so it is kept whole);
//! - `gmail.com` and `googlemail.com`: the dots removed too (then NFKC once more), under
//!   `gmail.com`.
//!
//! It is a pure function of the stored address, so a key can always be computed again
//! from a row (the migration that added keys did exactly that).

use std::fmt;

use icu_casemap::CaseMapperBorrowed;
use unicode_normalization::UnicodeNormalization;

/// The domains whose local parts ignore dots, and the one their keys are filed under.
const GMAIL_DOMAINS: [&str; 2] = ["gmail.com", "googlemail.com"];
const GMAIL: &str = "gmail.com";

/// Unicode's default (full) case folding, with ICU4X's compiled data.
const CASE: CaseMapperBorrowed<'static> = CaseMapperBorrowed::new();

/// The inbox an address reaches. Personal data: `Debug` shows it masked, and there is no
/// `Display` (addresses never reach logs); `as_str` is for the store's statements.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MailboxKey(String);

impl MailboxKey {
    /// The key of a normalised address (an `EmailAddress`, or one read from a row).
    pub fn of(address: &str) -> Self {
        let (local, domain) = address.rsplit_once('@').unwrap_or(("", address));
        let domain = domain.to_ascii_lowercase();
        let nfkc: String = local.nfkc().collect();
        let folded: String = CASE.fold_string(&nfkc).nfkc().collect();
        let base = match folded.find('+') {
            Some(at) if at > 0 => &folded[..at],
            _ => folded.as_str(),
        };
        if GMAIL_DOMAINS.contains(&domain.as_str()) {
            // Normalised once more: taking a dot out can bring two combining marks
            // together, whose canonical order may then differ (`İ.्` → `i्̇` → `i्̇`), and
            // the key of a key must be itself.
            let local: String = base.chars().filter(|c| *c != '.').nfkc().collect();
            Self(format!("{local}@{GMAIL}"))
        } else {
            Self(format!("{base}@{domain}"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for MailboxKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailboxKey({})", super::mask::mask(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EmailAddress;
    use proptest::prelude::*;

    fn key(raw: &str) -> String {
        EmailAddress::parse(raw).unwrap().mailbox_key().0
    }

    #[test]
    fn variants_of_one_inbox_share_a_key() {
        let cases = [
            // The contract's example.
            ("Jane.Doe+wallet@GoogleMail.com", "janedoe@gmail.com"),
            ("janedoe@gmail.com", "janedoe@gmail.com"),
            ("j.a.n.e.d.o.e@gmail.com", "janedoe@gmail.com"),
            ("JaneDoe+a+b@gmail.com", "janedoe@gmail.com"),
            // Case and tags, any domain; dots count outside Gmail.
            ("Jane@Example.com", "jane@example.com"),
            ("JANE+news@example.com", "jane@example.com"),
            ("jane.doe+x@example.com", "jane.doe@example.com"),
            ("Jane.X@example.com", "jane.x@example.com"),
            // No tag when the local part starts with `+`.
            ("+1555@example.com", "+1555@example.com"),
            // Full case folding (ß → ss, final sigma), and NFKC (ligature, width).
            ("Straße@example.com", "strasse@example.com"),
            ("STRASSE@example.com", "strasse@example.com"),
            ("ΟΔΟΣ@example.com", "οδοσ@example.com"),
            ("οδος@example.com", "οδοσ@example.com"),
            // One non-Latin script, combining marks kept.
            ("नमस्ते@example.com", "नमस्ते@example.com"),
            // The domain as normalised (IDNA), not folded any further.
            ("user@BÜCHER.example", "user@xn--bcher-kva.example"),
        ];
        for (raw, want) in cases {
            assert_eq!(key(raw), want, "{raw}");
        }
    }

    #[test]
    fn composed_and_decomposed_forms_share_a_key() {
        let composed = MailboxKey::of("jos\u{e9}@example.com");
        let decomposed = MailboxKey::of("jose\u{301}@example.com");
        let compat = MailboxKey::of("\u{ff4a}ose\u{301}@example.com"); // full-width j
        assert_eq!(composed, decomposed);
        assert_eq!(composed, compat);
    }

    #[test]
    fn different_inboxes_keep_different_keys() {
        let pairs = [
            ("jane@example.com", "jane@example.org"),
            ("jane.doe@example.com", "janedoe@example.com"),
            ("jane@gmail.com", "jane@gmail.co"),
            ("jane@example.com", "jone@example.com"),
        ];
        for (a, b) in pairs {
            assert_ne!(key(a), key(b), "{a} vs {b}");
        }
    }

    #[test]
    fn debug_output_is_masked() {
        let k = MailboxKey::of("jane@example.com");
        assert_eq!(format!("{k:?}"), "MailboxKey(j***@example.com)");
    }

    proptest! {
        /// A key is a fixed point: the key of a key is itself (so keys computed again
        /// from stored rows, or by a later release, agree).
        #[test]
        fn the_key_of_a_key_is_itself(raw in "[a-zA-Z0-9.+_\\-ßΣσςİıÅÉéअ-ह\u{94d}\u{947}]{1,20}@(example\\.com|gmail\\.com|googlemail\\.com)") {
            let k = MailboxKey::of(&raw);
            prop_assert_eq!(MailboxKey::of(k.as_str()), k.clone());
        }

        /// Changing only case, or adding a tag, never changes the key.
        #[test]
        fn case_and_tags_do_not_change_the_key(local in "[a-z][a-z0-9._]{0,15}", tag in "[a-z0-9]{0,8}") {
            let plain = MailboxKey::of(&format!("{local}@example.com"));
            let upper = MailboxKey::of(&format!("{}@example.com", local.to_uppercase()));
            let tagged = MailboxKey::of(&format!("{local}+{tag}@example.com"));
            prop_assert_eq!(&plain, &upper);
            prop_assert_eq!(&plain, &tagged);
        }
    }
}
