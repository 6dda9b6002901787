//! DANE (RFC 7672) certificate verification.
