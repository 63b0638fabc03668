//! Domain types: raw input is parsed into these once, at the edge, and the rest of the
//! service only ever sees values that are already valid. No I/O lives here.

pub mod email;
pub mod flow;
pub mod locale;
pub mod rate;
pub mod token;
pub mod user_id;

pub use email::EmailAddress;
pub use flow::{FlowKind, FlowState, FlowStep, Outcome};
pub use locale::Locale;
pub use rate::Rate;
pub use token::{Keyring, Token, TokenDigest};
pub use user_id::UserId;
