//! Everything a caller can put in a request field, through the parsers that guard the
//! edge: never a panic, always a clean value or a clean error, and what is accepted is
//! stable when parsed again.
#![no_main]

use emailverify::domain::token::is_code;
use emailverify::domain::{EmailAddress, Locale, Rate, Token, UserId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(a) = EmailAddress::parse(s) {
        assert!(a.as_str().len() <= 254);
        assert!(a.masked().contains("***@"));
        assert_eq!(EmailAddress::parse(a.as_str()).as_ref(), Ok(&a));
    }
    if let Ok(t) = Token::parse(s) {
        assert_eq!(t.expose(), s);
    }
    if let Ok(u) = UserId::parse(s) {
        assert!(!u.as_str().is_empty() && u.as_str().len() <= 128);
    }
    let _ = Rate::parse(s);
    let _ = Locale::from_tag(s);
    if is_code(s) {
        assert_eq!(s.len(), 6);
    }
});
