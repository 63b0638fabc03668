//! emailverify: proves that a wallet user owns an email address, and changes a verified
//! address safely. A reading order:
//!
//! 1. [`domain`] — the values everything else trusts (addresses, user ids, tokens, flows);
//! 2. [`core`] — every rule of the contract, one method per RPC, one error type;
//! 3. [`store`] — the database (sea-orm), and [`migrations`];
//! 4. [`mail`] — the outbox worker, transports and templates;
//! 5. [`grpc`] and [`http`] — the two thin front doors over the same core;
//! 6. [`settings`], [`telemetry`], [`startup`] — how it all starts.

/// The service core: the rules.
pub mod core;
/// Domain types, parsed once at the edge.
pub mod domain;
/// The gRPC front door.
pub mod grpc;
/// The HTTP link shim.
pub mod http;
/// Mail delivery: outbox worker, transports, templates.
pub mod mail;
/// Prometheus metrics.
pub mod metrics;
/// Schema migrations (portable PostgreSQL / SQLite).
#[path = "../migrations/mod.rs"]
pub mod migrations;
/// Settings (env vars = flags).
pub mod settings;
/// Application assembly and lifecycle.
pub mod startup;
/// Storage: the only code that speaks sea-orm.
pub mod store;
/// Logging set-up.
pub mod telemetry;
