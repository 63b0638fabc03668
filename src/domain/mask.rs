//! Masked addresses, for logs, events, pages and mails: enough to recognise one's own
//! address, never the whole of it.
//!
//! A change's two addresses must read apart (API.md, release 2) while at least half of
//! each local part stays hidden (issue 22). Characters alone cannot always do both: two
//! one-character local parts at one domain (`a@x.np`, `b@x.np`) may show nothing, so their
//! masks would be equal; and `john.smith@` / `john.smyth@` differ only in a middle that
//! half-hiding keeps hidden. So `mask_apart` shows characters while they tell the two
//! apart and, when they do not, adds a short FINGERPRINT of each whole address: letters of
//! an HMAC under a key derived from the token keys (`Keyring::mask_key`), long enough to
//! differ. Keyed, so a reader cannot test guesses of the hidden part against it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

/// Fingerprint letters: Crockford's base 32 (no I, L, O, U: nothing reads as 1 or 0).
const FINGERPRINT: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Fingerprint letters shown at first; more only if two addresses share them.
const FINGERPRINT_LEN: usize = 3;

/// Masks two different addresses so that a reader can tell them apart (a change's old
/// and new address), never showing more than half of either local part: the first
/// character, then also the last, then more of the start and end, while that is within
/// half; if the two masks still read alike, each gets a fingerprint of its whole address
/// (`j***h@x.np (#K7Q)`), as many letters as it takes to differ. `key`:
/// `Keyring::mask_key`.
pub fn mask_apart(a: &str, b: &str, key: &[u8]) -> (String, String) {
    const SHOWN: [(usize, usize); 5] = [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2)];
    let mut masks = (String::new(), String::new());
    for (head, tail) in SHOWN {
        masks = (mask_showing(a, head, tail), mask_showing(b, head, tail));
        if masks.0 != masks.1 || a == b {
            return masks;
        }
    }
    let (fa, fb) = (fingerprint(a, key), fingerprint(b, key));
    let len = (FINGERPRINT_LEN..fa.len())
        .find(|&n| fa[..n] != fb[..n])
        .unwrap_or(fa.len());
    (
        format!("{} (#{})", masks.0, &fa[..len]),
        format!("{} (#{})", masks.1, &fb[..len]),
    )
}

/// `head` characters of the local part from its start and `tail` from its end, each cut
/// so that at least half of the local part stays hidden (a one-character local part
/// shows none).
fn mask_showing(address: &str, head: usize, tail: usize) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return "***".to_owned();
    };
    let chars: Vec<char> = local.chars().collect();
    let most = chars.len() / 2;
    let head = head.min(most);
    let tail = tail.min(most - head);
    let start: String = chars[..head].iter().collect();
    let end: String = chars[chars.len() - tail..].iter().collect();
    format!("{start}***{end}@{domain}")
}

/// HMAC-SHA-256 of the address under `key`, in fingerprint letters (one per 5 bits: 51).
fn fingerprint(address: &str, key: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(address.as_bytes());
    let bytes = mac.finalize().into_bytes();
    let mut bits: u64 = 0;
    let mut have = 0;
    let mut out = String::with_capacity(52);
    for byte in bytes {
        bits = (bits << 8) | u64::from(byte);
        have += 8;
        while have >= 5 {
            have -= 5;
            out.push(char::from(FINGERPRINT[((bits >> have) & 0x1f) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = &[7; 32];

    #[test]
    fn a_changes_two_addresses_are_masked_apart() {
        let apart = |a, b| mask_apart(a, b, KEY);
        let (old, new) = apart("bikash@example.com.np", "bikash.new@example.com.np");
        assert_eq!(old, "b***h@example.com.np");
        assert_eq!(new, "b***w@example.com.np");
        // Different first letters: one letter each.
        assert_eq!(
            apart("jane@x.np", "mary@x.np"),
            ("j***@x.np".to_owned(), "m***@x.np".to_owned())
        );
        // Never more than half of a local part shows.
        assert_eq!(
            apart("ab@x.np", "ac@x.np").0.split(' ').next(),
            Some("a***@x.np")
        );
        assert!(
            apart("abcdef@x.np", "abcxef@x.np")
                .0
                .starts_with("abc***@x.np (#")
        );
    }

    #[test]
    fn addresses_that_differ_only_where_hidden_get_fingerprints() {
        let (a, b) = mask_apart("john.smith@x.np", "john.smyth@x.np", KEY);
        assert!(
            a.starts_with("joh***th@x.np (#") && b.starts_with("joh***th@x.np (#"),
            "{a} {b}"
        );
        assert_ne!(a, b);
        let (a, b) = mask_apart("a@x.np", "b@x.np", KEY);
        assert!(a.starts_with("***@x.np (#"), "{a}");
        assert_ne!(a, b);
        // Keyed: another key, another fingerprint.
        assert_ne!(mask_apart("a@x.np", "b@x.np", &[8; 32]).0, a);
    }

    /// How many characters of its local part a mask shows, and that part's length.
    fn shown(mask: &str, address: &str) -> (usize, usize) {
        let local_mask = mask.rsplit_once('@').map_or(mask, |(l, _)| l);
        let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
        (
            local_mask.chars().count() - "***".len(),
            local.chars().count(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Two different addresses always mask differently, and each mask hides at least
        /// half of its local part.
        #[test]
        fn different_addresses_always_mask_differently_and_half_stays_hidden(
            la in "[a-c.ने]{1,12}",
            lb in "[a-c.ने]{1,12}",
            da in prop::sample::select(vec!["x.np", "example.com", "y.np"]),
            db in prop::sample::select(vec!["x.np", "example.com"]),
        ) {
            let (a, b) = (format!("{la}@{da}"), format!("{lb}@{db}"));
            prop_assume!(a != b);
            let (ma, mb) = mask_apart(&a, &b, KEY);
            prop_assert_ne!(&ma, &mb);
            for (m, addr) in [(&ma, &a), (&mb, &b)] {
                let m = m.split(" (#").next().unwrap_or(m);
                let (shows, len) = shown(m, addr);
                prop_assert!(shows * 2 <= len, "{m} shows {shows} of {len} ({addr})");
            }
        }
    }
}
