//! Passerelle: a secure mail gateway.
//!
//! # Layout
//!
//! Modules are named after what a message passes through, in that order:
//!
//! - [`config`]: the TOML policy file, one struct per section; every error with its key path.
//! - [`smtp`]: listeners (connection limits), the session state machine, one file per command;
//!   STARTTLS is required before MAIL on an MX listener.
//! - [`relay`]: who may send to whom (own domains inbound, authorised networks outbound).
//! - [`directory`]: the people of our domains, checked at RCPT (store table, LDAP), and their
//!   delegates, who get a copy of inbound mail.
//! - [`envelope`], [`message`]: what a transaction established; the id and `Received:` header.
//! - [`store`]: SQLite or PostgreSQL behind one interface; the append-only event log.
//! - [`queue`]: enqueue in one transaction, a scheduler claiming due recipients with a lease,
//!   routes (own next hops, smarthost, MX), delivery with required TLS, retries, expiry.
//! - [`dsn`]: the bounce or delay notice to the sender; the original's headers, never its body.
//! - [`dns`], [`tls`]: the one resolver and the rustls configurations.
//! - [`daemon`], [`shutdown`]: boot order and graceful stop; [`cli`]: the commands.

pub mod admin;
pub mod batv;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod directory;
pub mod dkim;
pub mod dns;
pub mod dsn;
pub mod envelope;
#[doc(hidden)]
pub mod fuzzing;
pub mod message;
pub mod policy;
pub mod queue;
pub mod relay;
pub mod shutdown;
pub mod smtp;
pub mod store;
pub mod tls;
pub mod upkeep;
