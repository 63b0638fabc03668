//! `FlowId` and `MailId`: the ids the service gives its own rows (UUIDv7 text: time-ordered,
//! so new rows land at the end of their index). Not personal data: they are shown to
//! callers (`Flow.flow_id`), logged, and name a mail in its Message-ID and bounce tag.
//!
//! Like `UserId`, each is a `String` with a type: the store's API takes and gives these,
//! so a flow's id cannot be passed where a mail's is meant. `from_trusted` wraps one read
//! back from a row.

/// A `String` with a type: `from_trusted` (a value read back from a row), `as_str`,
/// `into_string`, and `Debug`/`Display` that show it whole (for ids only: never for
/// personal data). `UserId` is one too (`user_id.rs`), with its own `parse`.
macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// A value read back from a row (or named by one).
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

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
pub(crate) use string_id;

/// An id the service gives its own rows: a `string_id!` with `generate`.
macro_rules! row_id {
    ($(#[$meta:meta])* $name:ident) => {
        string_id!($(#[$meta])* $name);

        impl $name {
            /// A fresh id (UUIDv7).
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }
        }
    };
}

row_id!(
    /// A flow (a sign-up or a change): `flows.flow_id`.
    FlowId
);

row_id!(
    /// A queued mail: `outbox.mail_id`, also the left part of its Message-ID.
    MailId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_differ_and_read_back_as_stored() {
        let (a, b) = (FlowId::generate(), FlowId::generate());
        assert_ne!(a, b);
        assert_eq!(FlowId::from_trusted(a.as_str().to_owned()), a);
        assert_eq!(a.to_string(), a.as_str());
        let m = MailId::from_trusted("m1".to_owned());
        assert_eq!(format!("{m:?}"), "MailId(\"m1\")");
    }
}
