//! smarthost: an outbound-only mail delivery agent.
//!
//! A message travels through the modules in this order: [`submission`] (the
//! sendmail interface) or [`listener`] (SMTP from a local MTA, `smarthost
//! serve`, `sendmail -bs`), the queue, routing (MX resolution), policy (TLS
//! requirements), the SMTP client, and reports. Each module's documentation
//! says what it owns.

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod crashpoint;
pub mod delivery;
pub mod envelope;
pub mod exitcode;
pub mod listener;
pub mod logging;
pub mod policy;
pub mod queue;
pub mod reports;
pub mod routing;
pub mod smtp;
pub mod submission;
