//! Integration tests: the real service on random loopback ports, a real database
//! (SQLite and PostgreSQL: every test runs on both) and a real SMTP server.
//! One binary, one module per capability.

mod helpers;

mod addresses;
mod audit;
mod bounces;
mod browser;
mod change;
mod codes;
mod connections;
mod delivery;
mod deploy;
mod dkim;
mod edges;
mod erasure;
mod errors;
mod failover;
mod faults;
mod feed;
mod keys;
mod limits;
mod links;
mod locked;
mod migrations;
mod nats;
mod ops;
mod optimistic;
mod people;
mod process;
mod relay;
mod retention;
mod statements;
mod support;
mod support_refused;
mod tls;
mod verification;
