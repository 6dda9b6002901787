//! Session errors: where a session failed, with which host, and why, plus
//! the one place that decides whether a failure is transient or permanent.

use std::fmt;
use std::io;
use std::time::Duration;

use super::reply::{Reply, ReplyError};
use super::tls::CertVerification;

/// The step of the session that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Opening the connection (the caller's step; here for its errors).
    Connect,
    /// Waiting for the server's greeting (RFC 5321 §3.1).
    Greeting,
    /// EHLO or the HELO fallback.
    Ehlo,
    /// The STARTTLS command (RFC 3207 §4).
    StartTls,
    /// The TLS handshake, after STARTTLS or at connect for implicit TLS.
    TlsHandshake,
    /// AUTH (RFC 4954).
    Auth,
    /// MAIL FROM.
    MailFrom,
    /// RCPT TO.
    RcptTo,
    /// The DATA command and the message content.
    Data,
    /// The final `.` and its reply.
    DataEnd,
    /// QUIT.
    Quit,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Greeting => "greeting",
            Self::Ehlo => "EHLO",
            Self::StartTls => "STARTTLS",
            Self::TlsHandshake => "TLS handshake",
            Self::Auth => "AUTH",
            Self::MailFrom => "MAIL FROM",
            Self::RcptTo => "RCPT TO",
            Self::Data => "DATA",
            Self::DataEnd => "end of data",
            Self::Quit => "QUIT",
        })
    }
}

/// Whether retrying later can help (RFC 5321 §4.2.1, §4.5.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Keep the message queued and try again later.
    Transient,
    /// Give up and report the failure to the sender.
    Permanent,
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading from or writing to the connection failed.
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
    /// The peer did not answer, or did not take data, in time (RFC 5321
    /// §4.5.3.2).
    #[error("timed out after {}s", .0.as_secs())]
    Timeout(Duration),
    /// The peer answered with a failure or an unexpected reply.
    #[error("server replied {0}")]
    Reply(Reply),
    /// The peer's reply did not follow RFC 5321 §4.2.
    #[error("protocol violation: {0}")]
    Protocol(#[source] ReplyError),
    /// The peer sent bytes after its 220 reply to STARTTLS, before the
    /// handshake: they could have been injected by an attacker on the path
    /// (the reply-side form of the STARTTLS injection in RFC 7457 §2.1).
    #[error("protocol violation: data sent after the STARTTLS reply, before TLS")]
    DataAfterStartTls,
    /// The TLS handshake or the TLS layer failed.
    #[error("TLS failure: {0}")]
    Tls(#[source] io::Error),
    /// The TLS client configuration could not be built.
    #[error("TLS configuration: {0}")]
    TlsConfig(#[source] rustls::Error),
    /// The server name cannot be used for SNI or a certificate check.
    #[error("invalid server name {name:?}")]
    InvalidServerName {
        /// The name given.
        name: String,
    },
    /// TLS was required but the server did not offer STARTTLS.
    #[error("STARTTLS required but not offered")]
    StartTlsNotOffered,
    /// The certificate did not verify and verification was required.
    #[error("certificate rejected: {reason}")]
    CertificateRejected {
        /// What the verifier said.
        reason: String,
    },
    /// The message requires REQUIRETLS and the server did not offer it
    /// after STARTTLS (RFC 8689 §4.2.1 step 5).
    #[error("REQUIRETLS required but not offered after STARTTLS")]
    RequireTlsNotOffered,
    /// The message requires REQUIRETLS but the session is not protected by
    /// TLS with a verified certificate (RFC 8689 §4.2.1 steps 3 and 4).
    #[error("REQUIRETLS needs TLS with a verified certificate; {}", describe_protection(.verification))]
    RequireTlsUnverified {
        /// The certificate outcome, or `None` for a plaintext session.
        verification: Option<CertVerification>,
    },
    /// The message needs SMTPUTF8 and the server does not offer it
    /// (RFC 6531 §3.4; reported as 5.6.7, RFC 6531 §3.6).
    #[error("message needs SMTPUTF8, not offered by the server")]
    SmtpUtf8NotOffered,
    /// The message has 8-bit content and the server does not offer
    /// 8BITMIME; it is not converted to 7 bits here, so it cannot go to
    /// this server (RFC 6152 §3; reported as 5.6.3, RFC 3463).
    #[error("message has 8-bit content, and the server does not offer 8BITMIME")]
    EightBitNotOffered,
    /// The message is larger than the server's announced SIZE limit
    /// (RFC 1870 §6.1).
    #[error("message of {size} bytes exceeds the server's limit of {limit} bytes")]
    MessageTooLarge {
        /// The message size.
        size: u64,
        /// The limit the server announced.
        limit: u64,
    },
    /// Credentials are configured but the session has no TLS; they are
    /// never sent in plaintext.
    #[error("refusing to send credentials without TLS")]
    AuthOverPlaintext,
    /// Credentials are configured but the server offers no mechanism this
    /// client supports (PLAIN or LOGIN).
    #[error("no supported AUTH mechanism (PLAIN, LOGIN) offered; server offers: {}", describe_mechanisms(.offered))]
    AuthMechanismUnsupported {
        /// The mechanisms the server announced.
        offered: Vec<String>,
    },
    /// An envelope address or parameter would change the command it is put
    /// in (a control character such as CR or LF).
    #[error("{field} contains control characters: {value:?}")]
    InvalidEnvelope {
        /// Which field (`sender`, `recipient`).
        field: &'static str,
        /// The value, as given.
        value: String,
    },
}

fn describe_mechanisms(offered: &[String]) -> String {
    if offered.is_empty() {
        "none".to_owned()
    } else {
        offered.join(" ")
    }
}

fn describe_protection(verification: &Option<CertVerification>) -> String {
    match verification {
        None => "the session is not encrypted".to_owned(),
        Some(CertVerification::Verified(m)) => format!("the certificate verified ({m})"),
        Some(CertVerification::Failed(reason)) => {
            format!("the certificate did not verify: {reason}")
        }
        Some(CertVerification::NotChecked) => "the certificate was not checked".to_owned(),
    }
}

/// A failed SMTP session: the stage, the server and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{stage} with {server_name}: {kind}")]
#[non_exhaustive]
pub struct SessionError {
    /// The step that failed.
    pub stage: Stage,
    /// The server's name as given in the session configuration.
    pub server_name: String,
    /// The cause.
    #[source]
    pub kind: ErrorKind,
}

impl SessionError {
    /// Builds an error.
    pub fn new(stage: Stage, server_name: impl Into<String>, kind: ErrorKind) -> Self {
        Self {
            stage,
            server_name: server_name.into(),
            kind,
        }
    }

    /// The peer's reply, when the failure was a reply.
    pub fn reply(&self) -> Option<&Reply> {
        match &self.kind {
            ErrorKind::Reply(reply) => Some(reply),
            _ => None,
        }
    }

    /// True when the TLS handshake failed (after STARTTLS, or at connect
    /// for implicit TLS). The connection is then unusable (RFC 3207 §4.1);
    /// where policy allows, the caller may retry in plaintext on a new
    /// connection.
    pub fn is_tls_handshake_failure(&self) -> bool {
        self.stage == Stage::TlsHandshake
    }

    /// Whether a retry can help.
    ///
    /// Follows RFC 5321 §4.2.1: 5xx replies are permanent, 4xx replies,
    /// connection failures and timeouts transient. Failures of local
    /// configuration are transient so that mail waits for the fix instead
    /// of bouncing. REQUIRETLS and SMTPUTF8 refusals are structural and
    /// permanent (RFC 8689 §4.2.1 with 5.7.30; RFC 6531 §3.6 with 5.6.7),
    /// while TLS and certificate failures are retried (RFC 7672 §2.2 and
    /// RFC 8461 §5 prefer deferral).
    pub fn disposition(&self) -> Disposition {
        match &self.kind {
            ErrorKind::Reply(reply) => {
                if reply.is_permanent() {
                    Disposition::Permanent
                } else {
                    Disposition::Transient
                }
            }
            ErrorKind::Io(_)
            | ErrorKind::Timeout(_)
            | ErrorKind::Protocol(_)
            | ErrorKind::DataAfterStartTls
            | ErrorKind::Tls(_)
            | ErrorKind::TlsConfig(_)
            | ErrorKind::StartTlsNotOffered
            | ErrorKind::CertificateRejected { .. }
            | ErrorKind::RequireTlsUnverified { .. }
            | ErrorKind::AuthOverPlaintext
            | ErrorKind::AuthMechanismUnsupported { .. } => Disposition::Transient,
            ErrorKind::InvalidServerName { .. }
            | ErrorKind::RequireTlsNotOffered
            | ErrorKind::SmtpUtf8NotOffered
            | ErrorKind::EightBitNotOffered
            | ErrorKind::MessageTooLarge { .. }
            | ErrorKind::InvalidEnvelope { .. } => Disposition::Permanent,
        }
    }
}
