//! What the token keys also key besides links (API.md, release 3, "secrets that cannot
//! be guessed"): rate-limit buckets that hold no personal data, and the MAC that makes a
//! mail's bounce tag and Message-ID unguessable. Each purpose has its own derived key.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Keyring, derive, digest};

const LIMIT_INFO: &[u8] = b"emailverify/limit-bucket/v1";
const MAIL_TAG_INFO: &[u8] = b"emailverify/mail-tag/v1";
const MASK_INFO: &[u8] = b"emailverify/mask-fingerprint/v1";

impl Keyring {
    /// The key of a rate-limit bucket: `kind:` and a keyed digest (HMAC-SHA-256, key
    /// derived from the OLDEST configured key) of what it limits, so the table holds no
    /// user id, address or IP, and a bucket cannot be found from a value without the key.
    /// The oldest key changes only when an operator retires it, a link lifetime or more
    /// after the key that replaced it came in: by then the buckets have drained.
    pub fn limit_bucket(&self, kind: &str, value: &str) -> String {
        let oldest = self.keys.last().expect("a keyring holds at least one key");
        let key = derive(oldest, LIMIT_INFO);
        let message = format!("{kind}\0{value}");
        format!("{kind}:{}", digest(&key, message.as_bytes()).0)
    }

    /// The key of the fingerprint that tells two masked addresses apart (`mask_apart`):
    /// derived from the OLDEST key, like the buckets, so it stays while a key is added.
    /// Keyed, so a reader of a mask cannot test guesses of the address against it.
    pub fn mask_key(&self) -> Vec<u8> {
        let oldest = self.keys.last().expect("a keyring holds at least one key");
        derive(oldest, MASK_INFO).to_vec()
    }

    /// HMAC-SHA-256 of a mail's id under a key derived (HKDF) from each configured key,
    /// newest first: the newest makes the mail's bounce tag and Message-ID
    /// (`mail::message::mail_tag`), any of them verifies a tag a report quotes.
    pub fn mail_macs(&self, mail_id: &[u8]) -> Vec<[u8; 32]> {
        self.keys
            .iter()
            .map(|k| {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&derive(k, MAIL_TAG_INFO))
                    .expect("HMAC accepts keys of any length");
                mac.update(mail_id);
                let mut out = [0u8; 32];
                out.copy_from_slice(&mac.finalize().into_bytes());
                out
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(bytes: &[u8]) -> Keyring {
        Keyring::new(vec![bytes.repeat(32)]).unwrap()
    }

    #[test]
    fn limit_buckets_are_keyed_hold_no_value_and_survive_adding_a_key() {
        let old = ring(b"o");
        let b = old.limit_bucket("u", "user-1");
        assert_eq!(
            b,
            old.limit_bucket("u", "user-1"),
            "the same bucket each time"
        );
        assert!(b.starts_with("u:") && b.len() == 2 + 64, "{b}");
        assert!(!b.contains("user-1"));
        assert_ne!(b, old.limit_bucket("r", "user-1"), "kinds are apart");
        assert_ne!(b, old.limit_bucket("u", "user-2"));
        assert_ne!(b, ring(b"x").limit_bucket("u", "user-1"), "keyed");
        // A new key in front (a rotation's first step) keeps every bucket; retiring the
        // oldest key is what starts them afresh.
        let rotated = Keyring::new(vec![b"n".repeat(32), b"o".repeat(32)]).unwrap();
        assert_eq!(rotated.limit_bucket("u", "user-1"), b);
        assert_ne!(ring(b"n").limit_bucket("u", "user-1"), b);
    }
}
