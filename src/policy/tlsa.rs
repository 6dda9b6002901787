//! TLSA records (RFC 6698 §2.1) as the policy layer sees them, independent
//! of the resolver's types.

use serde::{Deserialize, Serialize};

/// Certificate usage DANE-TA (RFC 7218 §2.1): a trust anchor.
pub const USAGE_DANE_TA: u8 = 2;
/// Certificate usage DANE-EE (RFC 7218 §2.1): the server's own certificate.
pub const USAGE_DANE_EE: u8 = 3;
/// Selector Cert (RFC 7218 §2.2): the whole certificate.
pub const SELECTOR_CERT: u8 = 0;
/// Selector SPKI (RFC 7218 §2.2): the SubjectPublicKeyInfo.
pub const SELECTOR_SPKI: u8 = 1;
/// Matching type Full (RFC 7218 §2.3): the data itself.
pub const MATCHING_FULL: u8 = 0;
/// Matching type SHA2-256.
pub const MATCHING_SHA256: u8 = 1;
/// Matching type SHA2-512.
pub const MATCHING_SHA512: u8 = 2;

/// One TLSA record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tlsa {
    /// Certificate usage field.
    pub usage: u8,
    /// Selector field.
    pub selector: u8,
    /// Matching type field.
    pub matching: u8,
    /// Certificate association data.
    pub data: Vec<u8>,
}
