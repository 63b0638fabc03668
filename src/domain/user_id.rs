//! `UserId`: the wallet's opaque user id, 1..128 printable ASCII characters.

use std::fmt;

pub const MAX_LEN: usize = 128;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserIdError {
    #[error("user_id is empty")]
    Empty,
    #[error("user_id is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("user_id must be printable ASCII")]
    NotPrintable,
}

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, UserIdError> {
        if raw.is_empty() {
            return Err(UserIdError::Empty);
        }
        if raw.len() > MAX_LEN {
            return Err(UserIdError::TooLong);
        }
        // Printable ASCII: 0x20 (space) through 0x7E.
        if !raw.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(UserIdError::NotPrintable);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn from_trusted(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_printable_ascii_up_to_128() {
        assert!(UserId::parse("u").is_ok());
        assert!(UserId::parse("user 42/~!").is_ok());
        assert!(UserId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(UserId::parse(""), Err(UserIdError::Empty));
        assert_eq!(UserId::parse(&"x".repeat(129)), Err(UserIdError::TooLong));
        assert_eq!(UserId::parse("tab\there"), Err(UserIdError::NotPrintable));
        assert_eq!(UserId::parse("ünï"), Err(UserIdError::NotPrintable));
    }
}
