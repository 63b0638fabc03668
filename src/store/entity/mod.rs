//! One sea-orm entity per table. Columns mirror `migrations/`; enums are stored as the
//! short strings of `domain::flow`, times as Unix milliseconds.

pub mod event;
pub mod flow;
pub mod outbox;
pub mod rate_limit;
pub mod token;
pub mod user;
