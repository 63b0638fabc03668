//! One-time link tokens and the keys that guard them.
//!
//! A `Token` is 256 random bits, written as exactly 43 characters of unpadded base64url.
//! The database never stores it: it stores a `TokenDigest`, HMAC-SHA-256 of the token under
//! a server key, so a copy of the database alone never yields a working link. The newest
//! key signs; every configured key verifies, which lets operators rotate keys without
//! breaking links already in inboxes. The same keys (through HKDF) seal the outbox copy of a
//! link until its mail is handed to SMTP.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Keys derived for other secrets than links: rate-limit buckets, mails' bounce tags.
mod derived;

pub const TOKEN_LEN: usize = 43;
const TOKEN_BYTES: usize = 32;
pub const MIN_KEY_BYTES: usize = 32;
const SEAL_INFO: &[u8] = b"emailverify/outbox-seal/v1";
const NONCE_LEN: usize = 12;

stored_enum! {
    /// A stored token's state. Expiry is a time, not a state: an expired token stays `Live`.
    pub enum TokenState {
        /// Can still confirm its step (until it expires).
        Live = "live",
        /// Consumed by a confirmation.
        Used = "used",
        /// Replaced by a resend, a newer flow or a cancel.
        Superseded = "superseded",
    }
}

/// A raw one-time token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a token is exactly 43 characters of unpadded base64url")]
pub struct MalformedToken;

impl Token {
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts exactly the canonical encoding of 32 bytes; anything else is malformed.
    pub fn parse(raw: &str) -> Result<Self, MalformedToken> {
        if raw.len() != TOKEN_LEN {
            return Err(MalformedToken);
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| MalformedToken)?;
        if bytes.len() != TOKEN_BYTES {
            return Err(MalformedToken);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The secret itself: only for building the link in the mail.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Lower-case hex of HMAC-SHA-256(key, token): what the `tokens` table stores.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenDigest(pub String);

/// The server keys, newest first. `Debug` never shows them.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no key given")]
    Empty,
    #[error("key #{0} is not valid standard base64")]
    NotBase64(usize),
    #[error("key #{0} is shorter than {MIN_KEY_BYTES} bytes")]
    TooShort(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sealed value could not be opened with any configured key")]
pub struct SealError;

type HmacSha256 = Hmac<Sha256>;

impl Keyring {
    pub fn new(keys: Vec<Vec<u8>>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        if let Some(i) = keys.iter().position(|k| k.len() < MIN_KEY_BYTES) {
            return Err(KeyError::TooShort(i + 1));
        }
        Ok(Self { keys })
    }

    /// Parses `EMAILVERIFY_TOKEN_KEYS`: comma-separated standard base64, padding optional.
    pub fn from_base64_list(list: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (i, part) in list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let unpadded = part.trim_end_matches('=');
            let key = STANDARD_NO_PAD
                .decode(unpadded)
                .map_err(|_| KeyError::NotBase64(i + 1))?;
            keys.push(key);
        }
        Self::new(keys)
    }

    pub fn generate_key_base64() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    /// The digest a new token is stored under (newest key).
    pub fn sign(&self, token: &Token) -> TokenDigest {
        digest(&self.keys[0], token.expose().as_bytes())
    }

    /// Every digest the token could be stored under, one per configured key.
    pub fn candidates(&self, token: &Token) -> Vec<TokenDigest> {
        self.keys
            .iter()
            .map(|k| digest(k, token.expose().as_bytes()))
            .collect()
    }

    /// The digest a one-time code is stored under. It is bound to its token's row, so the
    /// same six digits of two different mails never share a digest.
    pub fn code_digest(&self, token_row: &str, code: &str) -> String {
        digest(&self.keys[0], code_message(token_row, code).as_bytes()).0
    }

    /// Whether `code` is the one stored for `token_row`, under any configured key. Every
    /// candidate is compared in constant time.
    pub fn code_matches(&self, token_row: &str, code: &str, stored: &str) -> bool {
        let message = code_message(token_row, code);
        self.keys.iter().fold(false, |found, k| {
            let candidate = digest(k, message.as_bytes()).0;
            found | bool::from(candidate.as_bytes().ct_eq(stored.as_bytes()))
        })
    }

    /// Seals `plaintext` with ChaCha20-Poly1305 under a key derived from the newest key.
    /// `context` (e.g. the outbox row id) is authenticated, so a sealed value cannot be
    /// moved to another row. Output: base64(nonce || ciphertext).
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> String {
        let cipher = seal_cipher(&self.keys[0]);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            // ChaCha20-Poly1305 encryption only fails for plaintexts of ~256 GiB.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// Opens a value sealed under any configured key.
    pub fn unseal(&self, sealed: &str, context: &[u8]) -> Result<Vec<u8>, SealError> {
        let raw = STANDARD.decode(sealed).map_err(|_| SealError)?;
        if raw.len() <= NONCE_LEN {
            return Err(SealError);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        self.keys
            .iter()
            .find_map(|k| {
                seal_cipher(k)
                    .decrypt(
                        Nonce::from_slice(nonce),
                        Payload {
                            msg: ciphertext,
                            aad: context,
                        },
                    )
                    .ok()
            })
            .ok_or(SealError)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({} keys, <redacted>)", self.keys.len())
    }
}

fn digest(key: &[u8], message: &[u8]) -> TokenDigest {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    let bytes = mac.finalize().into_bytes();
    TokenDigest(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn code_message(token_row: &str, code: &str) -> String {
    format!("code\0{token_row}\0{code}")
}

/// A uniformly random 6-digit code, zero-padded.
pub fn generate_code() -> String {
    use rand::Rng;
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// Exactly six ASCII digits.
pub fn is_code(raw: &str) -> bool {
    raw.len() == 6 && raw.bytes().all(|b| b.is_ascii_digit())
}

fn seal_cipher(key: &[u8]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(&derive(key, SEAL_INFO)))
}

/// A 32-byte key for one purpose (`info`), derived from a configured key (HKDF-SHA-256).
fn derive(key: &[u8], info: &[u8]) -> [u8; 32] {
    let mut okm = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(None, key)
        .expand(info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA-256 output length");
    okm
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring(bytes: &[u8]) -> Keyring {
        Keyring::new(vec![bytes.repeat(32)]).unwrap()
    }

    #[test]
    fn generated_tokens_are_43_url_safe_characters_and_parse_back() {
        let t = Token::generate();
        assert_eq!(t.expose().len(), TOKEN_LEN);
        assert!(
            t.expose()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Token::parse(t.expose()).unwrap(), t);
        assert_ne!(Token::generate(), t);
    }

    #[test]
    fn rejects_wrong_length_alphabet_and_non_canonical_endings() {
        let good = Token::generate();
        assert!(Token::parse(&good.expose()[..42]).is_err());
        assert!(Token::parse(&format!("{}A", good.expose())).is_err());
        assert!(Token::parse(&format!("{}+", &good.expose()[..42])).is_err());
        // 43 base64url characters carry 258 bits; the last 2 must be zero.
        assert!(Token::parse(&"A".repeat(43)).is_ok());
        assert!(Token::parse(&format!("{}B", "A".repeat(42))).is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let t = Token::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
        assert_eq!(format!("{:?}", ring(b"k")), "Keyring(1 keys, <redacted>)");
    }

    #[test]
    fn older_keys_still_verify_and_removed_keys_do_not() {
        let t = Token::generate();
        let old = ring(b"o");
        let rotated = Keyring::new(vec![b"n".repeat(32), b"o".repeat(32)]).unwrap();
        let new_only = ring(b"n");
        let stored = old.sign(&t);
        assert!(rotated.candidates(&t).contains(&stored));
        assert!(!new_only.candidates(&t).contains(&stored));
        assert_ne!(rotated.sign(&t), stored, "the newest key signs");
    }

    #[test]
    fn seal_round_trips_binds_context_and_follows_rotation() {
        let old = ring(b"o");
        let sealed = old.seal(b"secret link", b"row-1");
        assert!(!sealed.contains("secret"));
        assert_eq!(old.unseal(&sealed, b"row-1").unwrap(), b"secret link");
        assert!(old.unseal(&sealed, b"row-2").is_err());
        let rotated = Keyring::new(vec![b"n".repeat(32), b"o".repeat(32)]).unwrap();
        assert_eq!(rotated.unseal(&sealed, b"row-1").unwrap(), b"secret link");
        assert!(ring(b"n").unseal(&sealed, b"row-1").is_err());
    }

    #[test]
    fn key_list_parsing_names_the_bad_key() {
        let k = Keyring::generate_key_base64();
        assert!(Keyring::from_base64_list(&k).is_ok());
        assert!(Keyring::from_base64_list(k.trim_end_matches('=')).is_ok());
        assert_eq!(
            Keyring::from_base64_list(&format!("{k},%%%")).unwrap_err(),
            KeyError::NotBase64(2)
        );
        assert_eq!(
            Keyring::from_base64_list("c2hvcnQ=").unwrap_err(),
            KeyError::TooShort(1)
        );
        assert_eq!(
            Keyring::from_base64_list(" , ").unwrap_err(),
            KeyError::Empty
        );
    }

    #[test]
    fn codes_are_six_digits_bound_to_their_token_and_survive_rotation() {
        for _ in 0..200 {
            assert!(is_code(&generate_code()));
        }
        assert!(
            !is_code("12345") && !is_code("1234567") && !is_code("12a456") && !is_code("١٢٣٤٥٦")
        );
        let old = ring(b"o");
        let stored = old.code_digest("row-a", "123456");
        assert!(old.code_matches("row-a", "123456", &stored));
        assert!(!old.code_matches("row-a", "123457", &stored));
        assert!(
            !old.code_matches("row-b", "123456", &stored),
            "bound to its token row"
        );
        let rotated = Keyring::new(vec![b"n".repeat(32), b"o".repeat(32)]).unwrap();
        assert!(rotated.code_matches("row-a", "123456", &stored));
        assert!(!ring(b"n").code_matches("row-a", "123456", &stored));
    }

    proptest! {
        #[test]
        fn token_parsing_never_panics(raw in "\\PC{0,64}") {
            if let Ok(t) = Token::parse(&raw) {
                prop_assert_eq!(t.expose().len(), TOKEN_LEN);
            }
        }
    }
}
