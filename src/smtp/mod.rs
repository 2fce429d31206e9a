//! The SMTP server: listeners, the session state machine, one file per command.

pub mod auth;
pub mod connection;
pub mod data;
mod ehlo;
pub mod listener;
pub(crate) mod mail;
pub mod rate;
mod rcpt;
pub mod reply;
pub mod session;
