//! Policy: what protection a message needs on its way to each host, and
//! whether a session obtained it.
//!
//! Three sources of requirements meet here, and every one that applies must
//! hold; none can weaken another:
//!
//! - the message: REQUIRETLS (RFC 8689 §4.2.1), the `TLS-Required: No`
//!   header (RFC 8689 §4.2.2, ignored when REQUIRETLS is set), and the finer
//!   options stored in its [`SecurityRecord`];
//! - the local administrator: the `[tls]` level of the destination and the
//!   `[[rule]]` entries that match the sender and recipient domains;
//! - the destination's DNS: the DNSSEC status of its MX and address answers
//!   and its TLSA records (RFC 7672 §2.2).
//!
//! [`requirements`] combines the first two for one message and one
//! destination; [`wants_tlsa`] says whether a host's TLSA records are worth
//! asking for; [`decide`] turns all of it into a [`HostDecision`]: either a
//! reason not to use the host, or a [`TlsPlan`] for the session.
//!
//! `TLS-Required: No` sets aside the policy the recipient domain publishes
//! (DANE here) and never the levels the local administrator configured
//! (RFC 8689 §8.4 speaks for the sender about the recipient's policy). A
//! destination at the default level `dane` is following the recipient's
//! policy, so for such a message a DANE failure only gets recorded.

pub mod dane;
pub mod tlsa;

use crate::config::{Config, TlsLevel, TlsVersion};
use crate::envelope::{SecurityRecord, VerifyMethod};
use tlsa::Tlsa;

/// What one message needs on its way to one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// REQUIRETLS applies (RFC 8689 §4.2.1).
    pub requiretls: bool,
    /// `TLS-Required: No` applies: REQUIRETLS is not set and the header
    /// asked to set the recipient's published policy aside.
    pub tls_optional: bool,
    /// The MX answer must be DNSSEC-secure.
    pub require_dnssec: bool,
    /// Certificate checks restricted to one method (`Any` when not).
    pub verify: VerifyMethod,
    /// The lowest TLS version acceptable; `None` is 1.2, the floor of the
    /// TLS library (RFC 9325 §3.1.1).
    pub min_version: Option<TlsVersion>,
    /// The message or a rule asked for a lowest TLS version, which a
    /// plaintext session cannot meet: TLS is required, and there is no
    /// plaintext retry. The destination's own `min_version` only applies
    /// when TLS is used.
    pub tls_required: bool,
    /// The administrator's level for the destination.
    pub level: TlsLevel,
    /// The destination is the configured relayhost, not MX hosts.
    pub relay: bool,
    /// Requirements that cannot hold together (DANE only and PKIX only);
    /// the message cannot be delivered to this destination.
    pub conflict: Option<String>,
}

/// Combines the message's security record, the matching `[[rule]]`
/// entries and the destination's level. `sender` is the envelope sender
/// (empty for `<>`); `recipient_domain` the domain of the recipients being
/// delivered.
pub fn requirements(
    record: &SecurityRecord,
    config: &Config,
    sender: &str,
    recipient_domain: &str,
    relay: bool,
) -> Requirements {
    let sender_domain = sender.rsplit_once('@').map_or("", |(_, d)| d);
    let domain = config.domain_tls(recipient_domain);
    let mut requiretls = record.requiretls;
    let mut require_dnssec = record.require_dnssec;
    let mut methods: Vec<VerifyMethod> = record.tls_verify.into_iter().collect();
    let asked_min: Option<TlsVersion> = record.tls_min.as_deref().and_then(|v| v.parse().ok());
    let mut tls_required = asked_min.is_some();
    let mut min_version = [domain.min_version, asked_min].into_iter().flatten().max();
    for rule in config
        .rules
        .iter()
        .filter(|r| r.matches(sender_domain, recipient_domain))
    {
        requiretls |= rule.requiretls;
        require_dnssec |= rule.require_dnssec;
        methods.extend(rule.tls_verify);
        min_version = min_version.max(rule.tls_min);
        tls_required |= rule.tls_min.is_some();
    }
    let wants = |m| methods.contains(&m);
    let (verify, conflict) = match (wants(VerifyMethod::Dane), wants(VerifyMethod::Pkix)) {
        (true, true) => (
            VerifyMethod::Any,
            Some("the message and the rules require both DANE only and PKIX only".to_owned()),
        ),
        (true, false) => (VerifyMethod::Dane, None),
        (false, true) => (VerifyMethod::Pkix, None),
        (false, false) => (VerifyMethod::Any, None),
    };
    Requirements {
        requiretls,
        // RFC 8689 §4.1: with REQUIRETLS the header is ignored for policy.
        tls_optional: record.tls_optional && !requiretls,
        require_dnssec,
        verify,
        min_version,
        tls_required,
        level: domain.level,
        relay,
        conflict,
    }
}

impl Requirements {
    /// True when the delivery needs DNSSEC: REQUIRETLS or a required
    /// DNSSEC-validated MX (for MX destinations; a relayhost is a
    /// configured route, RFC 8689 §2), or DANE required by the message, a
    /// rule or the destination's level. Such deliveries wait while
    /// validation is not working instead of going out with less protection.
    pub fn needs_dnssec(&self) -> bool {
        let mx_rules = !self.relay
            && (self.requiretls || self.require_dnssec || self.level == TlsLevel::DaneOnly);
        mx_rules || self.verify == VerifyMethod::Dane
    }
}

/// Whether DNSSEC answers can be trusted in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dnssec {
    /// Validation works: the trust anchor's DNSKEY RRset came back secure.
    Working,
    /// Validation is turned off in the configuration (`dns.dnssec`).
    Off,
    /// Validation was found not working when the run started.
    Broken(String),
}

/// What DNS said about a host's TLSA records (RFC 7672 §2.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsaState {
    /// Not asked for: the host is not eligible for DANE (its MX or address
    /// answer was not secure), or nothing needs DANE.
    NotLooked,
    /// No secure TLSA RRset: a secure or insecure denial, or an insecure
    /// answer (which cannot be used, RFC 7672 §2.2.2).
    None,
    /// A secure TLSA RRset at `base`; `usable` is the subset of DANE-TA and
    /// DANE-EE records this client can use (RFC 7672 §3.1.3), possibly
    /// empty.
    Secure {
        /// The TLSA base domain, which becomes the SNI (RFC 7672 §8.1).
        base: String,
        /// Usable records.
        usable: Vec<Tlsa>,
    },
    /// The lookup failed (SERVFAIL, timeout, bogus).
    Failed(String),
    /// TLSA records exist but cannot be validated, because DNSSEC
    /// validation is not working in this run: the host asks for DANE that
    /// cannot be checked now.
    Unvalidated,
}

/// Everything [`decide`] needs to know about one host.
#[derive(Debug, Clone)]
pub struct HostFacts<'a> {
    /// The host name (MX exchange, the domain for an implicit MX, or the
    /// relay's name).
    pub host: &'a str,
    /// The recipient domain.
    pub recipient_domain: &'a str,
    /// The MX RRset (or, for an implicit MX, its denial) was DNSSEC-secure.
    /// For a relayhost, which comes from configuration, true.
    pub mx_secure: bool,
    /// The host's address answer was DNSSEC-secure.
    pub address_secure: bool,
    /// The TLSA outcome.
    pub tlsa: TlsaState,
    /// Whether DNSSEC validation works in this run.
    pub dnssec: &'a Dnssec,
    /// The relayhost's TLS mode, when the host is the relayhost.
    pub relay_tls: Option<crate::config::RelayTls>,
}

/// How a session uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTls {
    /// Never (a plaintext destination).
    Never,
    /// When offered; a missing STARTTLS means plaintext.
    Opportunistic,
    /// STARTTLS must be offered and succeed.
    Required,
    /// TLS from the first byte (RFC 8314 §3).
    Implicit,
}

/// How the certificate is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// PKIX against the host name (which is also the SNI).
    Pkix,
    /// DANE with these usable TLSA records; `names` are the reference
    /// identifiers for DANE-TA (RFC 7672 §3.2.2).
    Dane {
        /// The usable records.
        records: Vec<Tlsa>,
        /// Reference identifiers.
        names: Vec<String>,
    },
    /// Encryption only; the certificate is not checked (RFC 7672 §2.2
    /// outcome b: secure TLSA, none usable).
    None,
}

/// The plan for a session to one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPlan {
    /// STARTTLS or implicit TLS.
    pub starttls: StartTls,
    /// The certificate check.
    pub authentication: Authentication,
    /// A failed check fails the handshake. When false, the verdict is only
    /// recorded.
    pub enforce: bool,
    /// The SNI and, for PKIX, the name checked.
    pub server_name: String,
    /// The lowest TLS version.
    pub min_version: Option<TlsVersion>,
    /// After a failed handshake, one retry in plaintext on a new
    /// connection is allowed (opportunistic mail only).
    pub plaintext_retry: bool,
    /// Send REQUIRETLS on MAIL; the session then also insists on a
    /// verified certificate and REQUIRETLS in the post-TLS EHLO.
    pub requiretls: bool,
    /// What protection this plan aims for, for logs: `dane`,
    /// `dane-unusable`, `pkix`, `encrypt`, `opportunistic`, `none`.
    pub basis: &'static str,
}

/// Why a host is not used for this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Enhanced status code (RFC 3463).
    pub status: &'static str,
    /// Structural: no retry can help, and once every host is refused so,
    /// the recipients fail (SPEC decisions for RFC 8689 §4.2.1).
    pub permanent: bool,
    /// What an operator reads.
    pub reason: String,
}

/// The verdict for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDecision {
    /// Do not connect.
    Skip(Refusal),
    /// Connect with this plan.
    Use(TlsPlan),
}

/// True when the host's TLSA records should be looked up: DANE could be
/// used (RFC 7672 §2.2.1: a secure MX RRset; §2.2.2: a secure address
/// answer, and no TLSA queries for insecure hosts) and something wants it.
pub fn wants_tlsa(req: &Requirements, mx_secure: bool, address_secure: bool) -> bool {
    if !(mx_secure && address_secure) || req.verify == VerifyMethod::Pkix {
        return false;
    }
    if req.relay {
        return true;
    }
    match req.level {
        TlsLevel::Dane | TlsLevel::DaneOnly => true,
        TlsLevel::Verify => false,
        TlsLevel::None | TlsLevel::May | TlsLevel::Encrypt => {
            req.requiretls || req.verify == VerifyMethod::Dane
        }
    }
}

fn skip(status: &'static str, permanent: bool, reason: String) -> HostDecision {
    HostDecision::Skip(Refusal {
        status,
        permanent,
        reason,
    })
}

/// Decides how (and whether) to use one host for one message.
pub fn decide(req: &Requirements, facts: &HostFacts<'_>) -> HostDecision {
    match decide_for_host(req, facts) {
        HostDecision::Use(plan) if req.tls_required => insist_on_tls(plan),
        other => other,
    }
}

/// A lowest TLS version asked for by the message or a rule is not met by
/// plaintext, neither from the start nor after a failed handshake.
fn insist_on_tls(mut plan: TlsPlan) -> HostDecision {
    match plan.starttls {
        StartTls::Never | StartTls::Opportunistic => {
            plan.starttls = StartTls::Required;
            if matches!(plan.basis, "opportunistic" | "none") {
                plan.basis = "encrypt";
            }
        }
        StartTls::Required | StartTls::Implicit => {}
    }
    plan.plaintext_retry = false;
    HostDecision::Use(plan)
}

fn decide_for_host(req: &Requirements, facts: &HostFacts<'_>) -> HostDecision {
    use crate::config::RelayTls;
    if let Some(conflict) = &req.conflict {
        return skip("5.7.10", true, conflict.clone());
    }
    if req.needs_dnssec() {
        match facts.dnssec {
            Dnssec::Working => {}
            Dnssec::Off => {
                return skip(
                    "5.7.10",
                    true,
                    "the message needs DNSSEC, and validation is off (dns.dnssec = \"off\")".into(),
                )
            }
            Dnssec::Broken(reason) => {
                return skip(
                    "4.7.5",
                    false,
                    format!(
                        "DNSSEC validation is not working ({reason}); mail that needs it waits"
                    ),
                )
            }
        }
    }
    if !req.relay && !facts.mx_secure {
        // RFC 8689 §4.2.1 step 2: the MX must come from a DNSSEC-validated
        // answer (MTA-STS is the other way, not implemented here).
        if req.requiretls {
            return skip(
                "5.7.10",
                true,
                format!(
                    "REQUIRETLS: the MX records of {} are not DNSSEC-validated (RFC 8689 §4.2.1)",
                    facts.recipient_domain
                ),
            );
        }
        if req.require_dnssec {
            return skip(
                "5.7.10",
                true,
                format!(
                    "the message requires a DNSSEC-validated MX; the answer for {} is insecure",
                    facts.recipient_domain
                ),
            );
        }
    }
    let mut plan = TlsPlan {
        starttls: StartTls::Opportunistic,
        authentication: Authentication::Pkix,
        enforce: false,
        server_name: facts.host.to_owned(),
        min_version: req.min_version,
        plaintext_retry: false,
        requiretls: req.requiretls,
        basis: "opportunistic",
    };
    let strict_start = match facts.relay_tls {
        Some(RelayTls::Implicit) => StartTls::Implicit,
        _ => StartTls::Required,
    };

    // RFC 7672 §2.1.2: a failed TLSA lookup makes the host unusable; it is
    // never used with weaker TLS. Mail marked `TLS-Required: No` sets the
    // recipient's DANE policy aside and goes on as opportunistic mail.
    if let TlsaState::Failed(reason) = &facts.tlsa {
        let admin_demands_dane = !req.relay && req.level == TlsLevel::DaneOnly;
        if !req.tls_optional || admin_demands_dane || req.verify == VerifyMethod::Dane {
            return skip(
                "4.7.5",
                false,
                format!(
                    "TLSA lookup for {} failed: {reason}; host not used (RFC 7672 §2.1.2)",
                    facts.host
                ),
            );
        }
    }

    if facts.tlsa == TlsaState::Unvalidated && !req.tls_optional {
        return skip(
            "4.7.5",
            false,
            format!(
                "{} publishes TLSA records, which cannot be validated while DNSSEC \
                 validation is not working; host not used",
                facts.host
            ),
        );
    }

    if let Some(RelayTls::None) = facts.relay_tls {
        if req.requiretls || req.verify != VerifyMethod::Any || req.tls_required {
            return skip(
                "5.7.10",
                true,
                "the relayhost is configured for plaintext (relayhost_tls = \"none\"); \
                 the message requires TLS"
                    .into(),
            );
        }
        plan.starttls = StartTls::Never;
        plan.basis = "none";
        return HostDecision::Use(plan);
    }

    match &facts.tlsa {
        TlsaState::Secure { base, usable } if !usable.is_empty() => {
            // RFC 7672 §2.2 outcome a, §3.2.2: DANE decides; PKIX can never
            // rescue a failed DANE check.
            let mut names = vec![base.clone()];
            if facts.mx_secure && !req.relay {
                names.push(facts.recipient_domain.to_owned());
            }
            if facts.host != base {
                names.push(facts.host.to_owned());
            }
            names.dedup();
            plan.authentication = Authentication::Dane {
                records: usable.clone(),
                names,
            };
            plan.server_name = base.clone();
            plan.basis = "dane";
            let set_aside = req.tls_optional && req.level == TlsLevel::Dane && !req.relay;
            if set_aside && req.verify != VerifyMethod::Dane {
                // RFC 8689 §4.2.2: try, record, never fail because of it.
                plan.starttls = StartTls::Opportunistic;
                plan.plaintext_retry = true;
            } else {
                plan.starttls = strict_start;
                plan.enforce = true;
            }
            HostDecision::Use(plan)
        }
        TlsaState::Secure { .. } => {
            // Outcome b: secure but unusable records.
            if req.verify == VerifyMethod::Dane || (!req.relay && req.level == TlsLevel::DaneOnly) {
                return skip(
                    "4.7.5",
                    false,
                    format!("{}: no usable TLSA record; DANE is required", facts.host),
                );
            }
            if req.requiretls || req.relay || req.level == TlsLevel::Verify {
                // With REQUIRETLS a certificate check must still pass.
                plan.starttls = strict_start;
                plan.enforce = true;
                plan.basis = "pkix";
            } else if req.tls_optional && req.level == TlsLevel::Dane {
                plan.plaintext_retry = true;
            } else {
                plan.starttls = StartTls::Required;
                plan.authentication = Authentication::None;
                plan.basis = "dane-unusable";
            }
            HostDecision::Use(plan)
        }
        TlsaState::None | TlsaState::NotLooked | TlsaState::Failed(_) | TlsaState::Unvalidated => {
            if req.verify == VerifyMethod::Dane || (!req.relay && req.level == TlsLevel::DaneOnly) {
                return skip(
                    "4.7.5",
                    false,
                    format!(
                        "{}: no DNSSEC-secure TLSA records; DANE is required for this delivery",
                        facts.host
                    ),
                );
            }
            if req.requiretls || req.relay || req.verify == VerifyMethod::Pkix {
                plan.starttls = strict_start;
                plan.enforce = true;
                plan.basis = "pkix";
                return HostDecision::Use(plan);
            }
            match req.level {
                TlsLevel::Verify => {
                    plan.starttls = StartTls::Required;
                    plan.enforce = true;
                    plan.basis = "pkix";
                }
                TlsLevel::Encrypt => {
                    plan.starttls = StartTls::Required;
                    plan.basis = "encrypt";
                }
                TlsLevel::None => {
                    plan.starttls = StartTls::Never;
                    plan.basis = "none";
                }
                TlsLevel::May | TlsLevel::Dane | TlsLevel::DaneOnly => {
                    plan.plaintext_retry = true;
                }
            }
            HostDecision::Use(plan)
        }
    }
}

#[cfg(test)]
mod tests;
