//! Shared support for the integration tests: fake peers (an SMTP server
//! standing in for MX hosts, authoritative DNS servers, unsigned or under a
//! private DNSSEC-signed root), run-time test certificates, a private
//! environment for running the `smarthost` binary, and for the interop tests
//! `smarthost serve` as a child, a scripted SMTP client, swaks and private
//! Postfix instances.
//!
//! Use it from a test file with `mod support;` and `use support::...`. Every
//! server listens on 127.0.0.0/8 only and runs on one shared background tokio
//! runtime, so the tests themselves stay synchronous.

// Each integration test binary compiles this module but uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod daemon;
pub mod env;
pub mod fake_dns;
pub mod fake_mx;
pub mod postfix;
pub mod serve;
pub mod signed_dns;
pub mod smtp_client;
pub mod tools;
pub mod world;

use std::sync::OnceLock;

use tokio::runtime::Runtime;

pub use certs::{self_signed, CertifiedKey, TestCa};
pub use env::{config_for, Output, TestEnv};
pub use fake_dns::{FakeDns, ZoneBuilder};
pub use fake_mx::{free_port_on, FakeMx, FakeMxBuilder, ReceivedMessage};
pub use signed_dns::{SignedDns, SignedZones};

/// The runtime every fake server runs on; created on first use and kept for
/// the life of the test process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-peers")
            .enable_all()
            .build()
            .expect("start the test runtime")
    })
}
