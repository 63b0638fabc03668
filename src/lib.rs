//! emailverify: proves that a wallet user owns an email address, and changes a verified
//! address safely. The modules depend on each other in one direction only:
//! `domain` ← `store` ← `core` ← {`grpc`, `http`} (the front doors never touch the store),
//! with `mail` and `inbound` beside the core (they work on the store's outbox and
//! suppressions), and `clock` and `error` below them all. A reading order:
//!
//! 1. [`domain`] — the values everything else trusts (addresses, user ids, tokens, flows,
//!    the audit vocabulary), and [`error`], the one error type;
//! 2. [`core`] — every rule of the contract, one file per RPC;
//! 3. [`store`] — the database (sea-orm), one file per table, and [`migrations`];
//! 4. [`mail`] — the outbox worker, transports and templates;
//! 5. [`grpc`] and [`http`] — the two thin front doors over the same core, and [`inbound`],
//!    where bounces and complaints come back;
//! 6. [`settings`], [`telemetry`], [`startup`], [`cli`] — how it all starts.

/// The command line (`main` only runs it).
pub mod cli;
/// Time, injectable (tests move it forward).
pub mod clock;
/// The service core: the rules.
pub mod core;
/// Domain types, parsed once at the edge.
pub mod domain;
/// `CoreError`, the one error type, below the store and the core.
pub mod error;
/// The gRPC front door.
pub mod grpc;
/// The HTTP link shim.
pub mod http;
/// Bounces and complaints coming back: the inbound SMTP listener and its reports.
pub mod inbound;
/// Mail delivery: outbox worker, transports, templates.
pub mod mail;
/// Prometheus metrics.
pub mod metrics;
/// Schema migrations (portable PostgreSQL / SQLite).
#[path = "../migrations/mod.rs"]
pub mod migrations;
/// `emailverify probe`: the readiness check a rolling deploy waits on.
pub mod probe;
/// The change feed's publication to NATS JetStream (`EMAILVERIFY_EVENTS_NATS_URL`).
pub mod publish;
/// The retention task: old rows pruned in small batches.
pub mod retention;
/// Settings (env vars = flags).
pub mod settings;
/// Application assembly and lifecycle.
pub mod startup;
/// Storage: the only code that speaks sea-orm.
pub mod store;
/// Logging set-up.
pub mod telemetry;
