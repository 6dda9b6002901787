//! The envelope data model shared by submission, the queue and delivery.
//!
//! Everything here is stored in the queue (as JSON inside queue files and
//! sled records), so field names are part of the on-disk format: add fields
//! with `#[serde(default)]`, never rename or remove them.

use serde::{Deserialize, Serialize};

/// DSN options requested for the whole message (RFC 3461 §4.3, §4.4) and the
/// body type (RFC 6152), as given by `sendmail -N/-R/-V/-B` or by the SMTP
/// listener's MAIL parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DsnRequest {
    /// `NOTIFY=` for every recipient: `NEVER` or a list of SUCCESS, FAILURE,
    /// DELAY (RFC 3461 §4.1). `None` leaves the choice to the MTA.
    #[serde(default)]
    pub notify: Option<Vec<Notify>>,
    /// `RET=` (RFC 3461 §4.3).
    #[serde(default)]
    pub ret: Option<Ret>,
    /// `ENVID=`, printable ASCII, at most 100 characters before xtext
    /// encoding (RFC 3461 §4.4).
    #[serde(default)]
    pub envid: Option<String>,
    /// `BODY=` as requested by the submitter (`-B`), RFC 6152.
    #[serde(default)]
    pub body: Option<BodyType>,
}

/// One `NOTIFY=` keyword (RFC 3461 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Notify {
    /// Never send a DSN.
    Never,
    /// Report successful delivery.
    Success,
    /// Report failure.
    Failure,
    /// Report delay.
    Delay,
}

/// `RET=` (RFC 3461 §4.3): how much of the message a failure report returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ret {
    /// The whole message.
    Full,
    /// Headers only.
    Hdrs,
}

/// `BODY=` (RFC 6152 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyType {
    /// `7BIT`
    #[serde(rename = "7bit")]
    SevenBit,
    /// `8BITMIME`
    #[serde(rename = "8bitmime")]
    EightBitMime,
}

/// The TLS requirements that travel with a message.
///
/// RFC 8689 §4.1 asks that the REQUIRETLS tag be kept with the message in
/// the queue (not in a header); `TLS-Required: No` (RFC 8689 §3) is recorded
/// here as well so that policy decisions never re-parse the message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityRecord {
    /// REQUIRETLS applies to this message (RFC 8689 §4.2.1).
    #[serde(default)]
    pub requiretls: bool,
    /// The message carries a valid `TLS-Required: No` header (RFC 8689 §3).
    /// Ignored for policy when `requiretls` is set.
    #[serde(default)]
    pub tls_optional: bool,
    /// The MX lookup must be DNSSEC-validated.
    #[serde(default)]
    pub require_dnssec: bool,
    /// Restrict certificate checks to one method.
    #[serde(default)]
    pub tls_verify: Option<VerifyMethod>,
    /// Minimum TLS version, as "1.2" or "1.3".
    #[serde(default)]
    pub tls_min: Option<String>,
}

impl SecurityRecord {
    /// A one-line account for listings (`mailq`), or `None` when the
    /// message asks for nothing beyond the destination's policy.
    pub fn summary(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.requiretls {
            parts.push("REQUIRETLS".to_owned());
        } else if self.tls_optional {
            parts.push("TLS-Required: No".to_owned());
        }
        if self.require_dnssec {
            parts.push("require-dnssec".to_owned());
        }
        match self.tls_verify {
            Some(VerifyMethod::Dane) => parts.push("verify=dane".to_owned()),
            Some(VerifyMethod::Pkix) => parts.push("verify=pkix".to_owned()),
            Some(VerifyMethod::Any) | None => {}
        }
        if let Some(min) = &self.tls_min {
            parts.push(format!("tls-min={min}"));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// Certificate verification methods a message may be restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMethod {
    /// DANE (RFC 7672) only.
    Dane,
    /// PKIX with a name check only.
    Pkix,
    /// Either.
    Any,
}
