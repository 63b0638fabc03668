//! Mail: the outbox worker that delivers what the core queued, the transports it
//! delivers through, and the templates it renders. The core only ever *queues* mail,
//! inside its transaction; nothing here runs inside a request.

pub mod dkim;
pub mod message;
pub mod outbox;
pub mod smtp;
pub mod templates;
pub mod transport;
