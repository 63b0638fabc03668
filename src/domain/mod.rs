//! Domain types: raw input is parsed into these once, at the edge, and the rest of the
//! service only ever sees values that are already valid. No I/O lives here.
//!
//! The enums that rows store (a flow's kind, step and state, a token's state, a queued
//! mail's template and state) are declared with `stored_enum!`: each variant names its
//! database string once, and sea-orm reads and writes the column as the enum, so a row
//! never travels through the service as a bare string.

/// An enum stored as short text: one `"string"` per variant, used both by sea-orm
/// (`DeriveActiveEnum`) and by `as_str()` (logs, metrics labels).
macro_rules! stored_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $s:tt),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sea_orm::EnumIter, sea_orm::DeriveActiveEnum)]
        #[sea_orm(rs_type = "String", db_type = "Text")]
        $vis enum $name {
            $($(#[$vmeta])* #[sea_orm(string_value = $s)] $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s),+ }
            }
        }
    };
}

pub mod email;
pub mod event;
pub mod flow;
pub mod ids;
pub mod locale;
pub mod mail;
pub mod mailbox;
pub mod mask;
pub mod rate;
pub mod status;
pub mod token;
pub mod user_id;
pub mod when;

pub use email::EmailAddress;
pub use event::EventType;
pub use flow::{FlowKind, FlowState, FlowStep, Outcome};
pub use ids::{FlowId, MailId};
pub use locale::Locale;
pub use mail::{MailParams, MailState, Secrets, Template};
pub use mailbox::MailboxKey;
pub use rate::Rate;
pub use token::{Keyring, Token, TokenDigest, TokenState};
pub use user_id::UserId;

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ActiveEnum, Iterable};

    /// Every stored enum reads back what it writes, and `as_str` is the stored string.
    fn round_trips<E: ActiveEnum<Value = String> + Iterable + PartialEq + std::fmt::Debug>(
        as_str: fn(&E) -> &'static str,
    ) {
        for v in E::iter() {
            assert_eq!(v.to_value(), as_str(&v));
            assert_eq!(E::try_from_value(&v.to_value()).unwrap(), v);
        }
        assert!(E::try_from_value(&"nope".to_owned()).is_err());
    }

    #[test]
    fn stored_enums_round_trip_through_their_strings() {
        round_trips::<FlowKind>(|v| v.as_str());
        round_trips::<FlowStep>(|v| v.as_str());
        round_trips::<FlowState>(|v| v.as_str());
        round_trips::<TokenState>(|v| v.as_str());
        round_trips::<MailState>(|v| v.as_str());
        round_trips::<Template>(|v| v.as_str());
    }
}
