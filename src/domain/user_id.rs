//! `UserId`: the wallet's opaque user id, 1..128 printable ASCII characters.

use super::ids::string_id;

pub const MAX_LEN: usize = 128;

string_id!(
    /// The wallet's user id, checked by `parse` (or read back with `from_trusted`).
    UserId
);

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
