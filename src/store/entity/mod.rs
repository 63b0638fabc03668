//! One sea-orm entity per table. Columns mirror `migrations/`; enums are the
//! `stored_enum!`s of `domain` (short strings in the database), times as Unix milliseconds.

pub mod event;
pub mod flow;
pub mod outbox;
pub mod rate_limit;
pub mod token;
pub mod user;
