//! Policy: what protection a message needs on its way to each host, and
//! whether a session obtained it.
//!
//! The inputs are the message's security record (REQUIRETLS, RFC 8689; the
//! `TLS-Required: No` header, RFC 8689 §3; finer per-message options), the
//! local administrator's level for the destination, and what DNS said about
//! the destination (DNSSEC status of the MX and address answers, TLSA
//! records, RFC 7672). The output, per host, is how TLS is used and how the
//! certificate is authenticated.

pub mod dane;
pub mod tlsa;
