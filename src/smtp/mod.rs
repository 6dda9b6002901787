//! The SMTP client: one outbound session to a mail server, from greeting to
//! QUIT, with STARTTLS or implicit TLS, AUTH, DSN, SMTPUTF8 and REQUIRETLS.
//!
//! This module owns the wire protocol: reply parsing ([`reply`]), EHLO
//! capabilities ([`ehlo`]), command encoding ([`command`]), the TLS client
//! configuration and certificate verdicts ([`tls`]), the session itself
//! ([`session`]) and its errors ([`error`]). It does not resolve MX hosts,
//! open connections, choose a TLS policy for a destination or retry; the
//! delivery layer does that and hands a connected stream to
//! [`session::deliver`].
//!
//! The client is our own rather than lettre's because lettre's cannot show
//! the raw EHLO keywords (needed for REQUIRETLS, DSN and unknown
//! extensions), cannot take a custom rustls certificate verifier (needed to
//! record PKIX outcomes for opportunistic TLS, and later for DANE), and does
//! not report the negotiated TLS version or cipher suite.

pub mod command;
pub mod ehlo;
pub mod error;
pub mod reply;
pub mod session;
pub mod tls;

pub use ehlo::{parse_ehlo, Capabilities};
pub use error::{Disposition, ErrorKind, SessionError, Stage};
pub use reply::{EnhancedCode, Reply, ReplyError, ReplyParser};
pub use session::{
    deliver, establish, probe, Connection, DaneAuth, Delivered, Probed, RecipientOutcome,
    RecipientSpec, SessionConfig, Timeouts, TlsMode, Transaction,
};
pub use tls::{AuthMethod, CertVerification, PkixVerifier, TlsInfo, TlsVersion, VerifyPolicy};
