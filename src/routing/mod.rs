//! Routing: from a recipient domain to the hosts and addresses to try.
//!
//! RFC 5321 §5.1: look up the MX records; sort them by preference and shuffle
//! hosts of equal preference; with no MX records, the domain itself is the
//! one host (the implicit MX); a null MX (RFC 7505) means the domain accepts
//! no mail. A name that does not exist is a permanent failure; a DNS failure
//! (SERVFAIL, timeout) is temporary and the delivery is deferred, never
//! treated as "no records".
//!
//! This module answers "where", not "how safely", but it keeps the DNSSEC
//! status of every answer for the TLS policy layer (RFC 7672 §2.1):
//!
//! * The resolver validates answers itself (`[dns] dnssec = "validate"`, the
//!   default) from the IANA root keys or the DNSKEY records of
//!   `[dns] trust_anchor` (see [`anchor`]). The upstream nameserver only has
//!   to pass DNSSEC records through; its AD bit is not used.
//! * An answer is [`Security::Secure`] only when every record used, and every
//!   CNAME leading to it, validated as secure (RFC 4035 §4.3, RFC 7672
//!   §2.1.3); a denial of existence (NXDOMAIN, NODATA) is secure when its
//!   NSEC proof is. Anything provably unsigned is [`Security::Insecure`].
//! * A bogus or indeterminate answer is [`RouteError::Bogus`]: a lookup
//!   failure that defers delivery, never "no records" (RFC 7672 §2.1.1).
//! * With `dnssec = "off"` nothing is validated and every answer is
//!   insecure.

pub mod anchor;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::TokioResolver;

use crate::config::{Config, DnssecMode, IpFamily};
use crate::policy::tlsa::Tlsa;

pub use anchor::TrustAnchor;

/// At most this many MX hosts are tried per domain, as MTAs commonly cap
/// the list (Postfix tries 5 addresses, chasquid 5 hosts).
const MAX_MX_HOSTS: usize = 10;

/// At most this many CNAMEs are followed when checking a chain by hand
/// (RFC 7672 §2.1.3 asks for a limit).
const MAX_CNAME_CHAIN: usize = 8;

/// The DNSSEC status of an answer (RFC 4035 §4.3), as far as routing is
/// concerned: bogus and indeterminate answers are errors, not a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Every record in the answer, and every CNAME leading to it, validated
    /// from a trust anchor; or the denial of existence did.
    Secure,
    /// Provably unsigned, not validated (`dnssec = "off"`), or not from DNS
    /// at all (an address literal).
    Insecure,
}

impl Security {
    /// Secure only when both are.
    pub fn and(self, other: Self) -> Self {
        if self == Self::Secure && other == Self::Secure {
            Self::Secure
        } else {
            Self::Insecure
        }
    }
}

/// One host to try for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Host name (A-labels, no trailing dot), or an address literal.
    pub name: String,
    /// MX preference; 0 for an implicit MX.
    pub preference: u16,
    /// True when the domain had no MX records and its own name is used
    /// (RFC 5321 §5.1).
    pub implicit: bool,
}

/// The hosts of a domain, best first, and how far the MX answer can be
/// trusted (RFC 7672 §2.2.1: DANE needs a secure MX RRset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxSet {
    /// The hosts to try.
    pub hosts: Vec<MxHost>,
    /// The MX RRset's security; for an implicit MX that of the NODATA
    /// denial; for an address literal, insecure.
    pub security: Security,
}

/// The addresses of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// IPv6 first, then IPv4, filtered by the configured family.
    pub ips: Vec<IpAddr>,
    /// Secure only when every address lookup made (AAAA and A, records or
    /// denial) was secure (RFC 7672 §2.2.2).
    pub security: Security,
    /// The name after following CNAMEs (equal to the host when there is
    /// none), lower case and without the final dot: the first TLSA base
    /// domain candidate of RFC 7672 §2.2.2.
    pub canonical: String,
}

/// The TLSA RRset of a service (RFC 6698 §2, RFC 7672 §2.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsaAnswer {
    /// The records; empty when the name or the RRset does not exist.
    pub records: Vec<Tlsa>,
    /// Of the RRset, or of its denial of existence.
    pub security: Security,
}

/// Why a domain or host could not be routed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The domain publishes a null MX (RFC 7505 §3): it accepts no mail.
    #[error("{domain}: domain does not accept mail (null MX, RFC 7505)")]
    NullMx {
        /// The domain.
        domain: String,
    },
    /// The name does not exist.
    #[error("{name}: domain not found (NXDOMAIN)")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The name exists but has no MX and no address records.
    #[error("{name}: no MX and no address records")]
    NoAddress {
        /// The name.
        name: String,
    },
    /// The lookup failed (SERVFAIL, REFUSED, timeout): try later.
    #[error("{name} {rtype}: DNS lookup failed: {reason}")]
    Temporary {
        /// The name.
        name: String,
        /// The record type asked for.
        rtype: &'static str,
        /// The resolver's account.
        reason: String,
    },
    /// The answer failed DNSSEC validation (bogus or indeterminate): a
    /// lookup failure, so delivery waits (RFC 7672 §2.1.1).
    #[error("{name} {rtype}: DNSSEC validation failed: {reason}")]
    Bogus {
        /// The name.
        name: String,
        /// The record type asked for.
        rtype: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The resolver could not be set up.
    #[error("cannot set up the DNS resolver: {reason}")]
    Setup {
        /// Why.
        reason: String,
    },
}

impl RouteError {
    /// True for failures that will not change by retrying.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::NullMx { .. } | Self::NotFound { .. } | Self::NoAddress { .. } => true,
            Self::Temporary { .. } | Self::Bogus { .. } | Self::Setup { .. } => false,
        }
    }

    /// The enhanced status code (RFC 3463, RFC 7505 §4.1) for a report.
    pub fn status(&self) -> &'static str {
        match self {
            Self::NullMx { .. } => "5.1.10",
            Self::NotFound { .. } | Self::NoAddress { .. } => "5.1.2",
            Self::Temporary { .. } | Self::Bogus { .. } | Self::Setup { .. } => "4.4.3",
        }
    }
}

/// What a lookup found.
enum Found {
    Records(Vec<RData>),
    NxDomain,
    NoData,
}

/// A lookup's records (or denial), with its security and the name the
/// records belong to after CNAMEs.
struct Answer {
    found: Found,
    security: Security,
    canonical: Name,
}

/// The resolver used for delivery.
pub struct Router {
    resolver: TokioResolver,
    validating: bool,
    /// The zone whose DNSKEY RRset [`Router::check_validation`] asks for.
    anchor_zone: Name,
}

impl Router {
    /// Builds the resolver: the configured nameservers, or the system's
    /// `/etc/resolv.conf`; validating unless `dns.dnssec = "off"`, from the
    /// configured trust anchor or the IANA root keys.
    pub fn new(config: &Config) -> Result<Self, RouteError> {
        let setup = |e: NetError| RouteError::Setup {
            reason: e.to_string(),
        };
        let validating = config.dnssec == DnssecMode::Validate;
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 2;
        // Names are always fully qualified here; no search list.
        opts.ndots = 0;
        opts.validate = validating;
        // Keep the CNAMEs in answers, so that their proofs count too.
        opts.preserve_intermediates = true;
        let builder = if config.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(setup)?
        } else {
            let servers = config.nameservers.iter().map(nameserver).collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let mut builder = builder.with_options(opts);
        let mut anchor_zone = Name::root();
        if let (true, Some(path)) = (validating, &config.trust_anchor) {
            let anchor = TrustAnchor::load(path).map_err(|reason| RouteError::Setup { reason })?;
            anchor_zone = anchor.zone.clone();
            builder = builder.with_trust_anchor(Arc::new(anchor.anchors));
        }
        let resolver = builder.build().map_err(setup)?;
        Ok(Self {
            resolver,
            validating,
            anchor_zone,
        })
    }

    /// False when DNSSEC validation is off (`dns.dnssec = "off"`).
    pub fn validating(&self) -> bool {
        self.validating
    }

    /// The hosts to try for `domain`, best first.
    pub async fn mx_hosts(&self, domain: &str) -> Result<MxSet, RouteError> {
        if let Some(ip) = address_literal(domain) {
            return Ok(MxSet {
                hosts: vec![MxHost {
                    name: ip.to_string(),
                    preference: 0,
                    implicit: true,
                }],
                security: Security::Insecure,
            });
        }
        let answer = self.lookup(domain, RecordType::MX).await?;
        let hosts = match answer.found {
            Found::NxDomain => {
                return Err(RouteError::NotFound {
                    name: domain.into(),
                })
            }
            // RFC 5321 §5.1: no MX records, the domain is its own MX.
            Found::NoData => vec![MxHost {
                name: domain.into(),
                preference: 0,
                implicit: true,
            }],
            Found::Records(records) => order_mx(domain, records)?,
        };
        Ok(MxSet {
            hosts,
            security: answer.security,
        })
    }

    /// The addresses of a host, IPv6 first, filtered by family. A host
    /// without addresses is [`RouteError::NoAddress`]. An address literal
    /// is returned as it is, insecure.
    pub async fn addresses(&self, host: &str, family: IpFamily) -> Result<Addresses, RouteError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Addresses {
                ips: vec![ip],
                security: Security::Insecure,
                canonical: host.into(),
            });
        }
        let mut found = Vec::new();
        let mut exists = false;
        let mut security = self.best();
        let mut canonical = None;
        let types: &[RecordType] = match family {
            IpFamily::Any => &[RecordType::AAAA, RecordType::A],
            IpFamily::Ipv4 => &[RecordType::A],
            IpFamily::Ipv6 => &[RecordType::AAAA],
        };
        for &rtype in types {
            let answer = self.lookup(host, rtype).await?;
            security = security.and(answer.security);
            match answer.found {
                Found::Records(records) => {
                    exists = true;
                    canonical.get_or_insert(answer.canonical);
                    found.extend(records.into_iter().filter_map(|r| match r {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    }));
                }
                Found::NoData => exists = true,
                Found::NxDomain => {}
            }
        }
        if found.is_empty() {
            return Err(if exists {
                RouteError::NoAddress { name: host.into() }
            } else {
                RouteError::NotFound { name: host.into() }
            });
        }
        Ok(Addresses {
            ips: found,
            security,
            canonical: canonical.map_or_else(|| host.to_ascii_lowercase(), |n| display_name(&n)),
        })
    }

    /// The TLSA RRset at `_<port>._tcp.<name>` (RFC 7672 §2.2.3); a CNAME
    /// at that name is followed. NXDOMAIN and NODATA give no records, with
    /// the security of the denial; SERVFAIL, timeouts and bogus answers are
    /// errors (RFC 7672 §2.1.1).
    pub async fn tlsa(&self, name: &str, port: u16) -> Result<TlsaAnswer, RouteError> {
        let owner = format!("_{port}._tcp.{}", name.trim_end_matches('.'));
        let answer = self.lookup(&owner, RecordType::TLSA).await?;
        let records = match answer.found {
            Found::Records(records) => records
                .into_iter()
                .filter_map(|r| match r {
                    RData::TLSA(t) => Some(Tlsa {
                        usage: t.cert_usage.into(),
                        selector: t.selector.into(),
                        matching: t.matching.into(),
                        data: t.cert_data,
                    }),
                    _ => None,
                })
                .collect(),
            Found::NxDomain | Found::NoData => Vec::new(),
        };
        Ok(TlsaAnswer {
            records,
            security: answer.security,
        })
    }

    /// Checks that validation works: the DNSKEY RRset of the root (or of
    /// the trust anchor's zone) must come back secure. Fails when
    /// validation is off, when the anchor does not match the zone's keys,
    /// and when the nameserver strips DNSSEC records.
    pub async fn check_validation(&self) -> Result<(), RouteError> {
        let zone = display_zone(&self.anchor_zone);
        if !self.validating {
            return Err(RouteError::Setup {
                reason: "DNSSEC validation is off (dns.dnssec = \"off\")".into(),
            });
        }
        let answer = self.lookup(&zone, RecordType::DNSKEY).await?;
        let problem = match (answer.found, answer.security) {
            (Found::Records(_), Security::Secure) => return Ok(()),
            (Found::Records(_), Security::Insecure) => {
                "the DNSKEY RRset did not validate as secure (does the nameserver pass DNSSEC \
                 records through?)"
            }
            (Found::NoData | Found::NxDomain, _) => "no DNSKEY records",
        };
        Err(RouteError::Bogus {
            name: zone,
            rtype: "DNSKEY",
            reason: problem.into(),
        })
    }

    /// The security an answer has when nothing makes it worse.
    fn best(&self) -> Security {
        if self.validating {
            Security::Secure
        } else {
            Security::Insecure
        }
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Answer, RouteError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let temporary = |reason: String| RouteError::Temporary {
            name: name.into(),
            rtype: rtype_name(rtype),
            reason,
        };
        let bogus = |reason: String| RouteError::Bogus {
            name: name.into(),
            rtype: rtype_name(rtype),
            reason,
        };
        let qname = Name::from_ascii(&fqdn).map_err(|e| temporary(e.to_string()))?;
        match self.resolver.lookup(qname.clone(), rtype).await {
            Ok(lookup) => {
                let answers = lookup.answers();
                let (mut canonical, chain) = follow_cnames(&qname, answers);
                let wanted: Vec<&Record> = answers
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .collect();
                if !wanted.is_empty() && !wanted.iter().any(|r| r.name == canonical) {
                    canonical = wanted[0].name.clone();
                }
                let mut security = self
                    .judge(chain.iter().copied().chain(wanted.iter().copied()))
                    .map_err(bogus)?;
                if wanted.is_empty() {
                    // A CNAME chain ending without records: the proof is in
                    // the authority section.
                    let denial = lookup
                        .authorities()
                        .iter()
                        .filter(|r| r.record_type() != RecordType::RRSIG);
                    security = security.and(self.judge(denial).map_err(bogus)?);
                    if lookup.authorities().is_empty() {
                        security = Security::Insecure;
                    }
                }
                let found = if wanted.is_empty() {
                    Found::NoData
                } else {
                    Found::Records(wanted.into_iter().map(|r| r.data.clone()).collect())
                };
                Ok(Answer {
                    found,
                    security,
                    canonical,
                })
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(no))) => {
                let found = if no.response_code == ResponseCode::NXDomain {
                    Found::NxDomain
                } else {
                    Found::NoData
                };
                let authorities = no.authorities.as_deref().unwrap_or_default();
                let mut security = self
                    .judge(
                        authorities
                            .iter()
                            .filter(|r| r.record_type() != RecordType::RRSIG),
                    )
                    .map_err(bogus)?;
                if authorities.is_empty() {
                    security = Security::Insecure;
                }
                let canonical = no.query.name().clone();
                if canonical != qname {
                    // The resolver followed CNAMEs but kept only the last
                    // denial; the chain's own proofs have to be fetched.
                    security = security.and(self.cname_chain(name, &qname, &canonical).await?);
                }
                Ok(Answer {
                    found,
                    security,
                    canonical,
                })
            }
            Err(NetError::Dns(DnsError::Nsec {
                proof, response, ..
            })) => match proof {
                Proof::Insecure => Ok(Answer {
                    found: if response.response_code == ResponseCode::NXDomain {
                        Found::NxDomain
                    } else {
                        Found::NoData
                    },
                    security: Security::Insecure,
                    canonical: qname,
                }),
                other => Err(bogus(format!("the denial of existence is {other}"))),
            },
            Err(NetError::Dns(DnsError::DnssecBogus)) => Err(bogus(
                "the answer is bogus (no valid chain of trust)".into(),
            )),
            Err(e) => Err(temporary(e.to_string())),
        }
    }

    /// The security of records as validation left them: Insecure when any
    /// is insecure (or validation is off), an error when any is bogus or
    /// indeterminate.
    fn judge<'a>(&self, records: impl Iterator<Item = &'a Record>) -> Result<Security, String> {
        if !self.validating {
            return Ok(Security::Insecure);
        }
        let mut security = Security::Secure;
        for record in records {
            match record.proof {
                Proof::Secure => {}
                Proof::Insecure => security = Security::Insecure,
                other => {
                    return Err(format!(
                        "{} {} is {other}",
                        record.name,
                        record.record_type()
                    ))
                }
            }
        }
        Ok(security)
    }

    /// Looks up the CNAMEs from `from` to `to` one by one and combines their
    /// security (RFC 7672 §2.1.3: once a link is insecure, so is the rest).
    async fn cname_chain(
        &self,
        shown: &str,
        from: &Name,
        to: &Name,
    ) -> Result<Security, RouteError> {
        let mut security = self.best();
        let mut current = from.clone();
        for _ in 0..MAX_CNAME_CHAIN {
            if &current == to {
                return Ok(security);
            }
            let answer = self.lookup_cname(shown, &current).await?;
            let Some((target, link)) = answer else {
                break;
            };
            security = security.and(link);
            current = target;
        }
        // The chain changed under us or is too long: nothing is proven.
        Ok(if &current == to {
            security
        } else {
            Security::Insecure
        })
    }

    /// The CNAME at `name`, with its security.
    async fn lookup_cname(
        &self,
        shown: &str,
        name: &Name,
    ) -> Result<Option<(Name, Security)>, RouteError> {
        let error = |reason: String| RouteError::Temporary {
            name: shown.into(),
            rtype: "CNAME",
            reason,
        };
        match self.resolver.lookup(name.clone(), RecordType::CNAME).await {
            Ok(lookup) => {
                let Some(record) = lookup
                    .answers()
                    .iter()
                    .find(|r| r.record_type() == RecordType::CNAME && &r.name == name)
                else {
                    return Ok(None);
                };
                let security =
                    self.judge(std::iter::once(record))
                        .map_err(|reason| RouteError::Bogus {
                            name: shown.into(),
                            rtype: "CNAME",
                            reason,
                        })?;
                Ok(match &record.data {
                    RData::CNAME(target) => Some((target.0.clone(), security)),
                    _ => None,
                })
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(_))) => Ok(None),
            Err(NetError::Dns(DnsError::DnssecBogus | DnsError::Nsec { .. })) => {
                Err(RouteError::Bogus {
                    name: shown.into(),
                    rtype: "CNAME",
                    reason: "the CNAME is bogus".into(),
                })
            }
            Err(e) => Err(error(e.to_string())),
        }
    }
}

/// Follows the CNAMEs in `answers` from `qname`: the last name reached and
/// the CNAME records passed.
fn follow_cnames<'a>(qname: &Name, answers: &'a [Record]) -> (Name, Vec<&'a Record>) {
    let mut current = qname.clone();
    let mut chain = Vec::new();
    while chain.len() < answers.len() {
        let next = answers
            .iter()
            .find(|r| r.record_type() == RecordType::CNAME && r.name == current);
        match next.map(|r| (r, &r.data)) {
            Some((record, RData::CNAME(target))) => {
                chain.push(record);
                current = target.0.clone();
            }
            _ => break,
        }
    }
    (current, chain)
}

/// A name as the rest of smarthost writes it: lower case, no final dot.
fn display_name(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// A zone name for messages and lookups: `.` for the root.
fn display_zone(name: &Name) -> String {
    if name.is_root() {
        ".".into()
    } else {
        display_name(name)
    }
}

fn nameserver(addr: &SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

fn rtype_name(rtype: RecordType) -> &'static str {
    match rtype {
        RecordType::MX => "MX",
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::TLSA => "TLSA",
        RecordType::CNAME => "CNAME",
        RecordType::DNSKEY => "DNSKEY",
        _ => "record",
    }
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3).
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner
        .strip_prefix("IPv6:")
        .or_else(|| inner.strip_prefix("ipv6:"))
        .unwrap_or(inner);
    inner.parse().ok()
}

/// Sorts MX records by preference, shuffling hosts of equal preference
/// (RFC 5321 §5.1), and recognises a null MX (RFC 7505 §3).
fn order_mx(domain: &str, records: Vec<RData>) -> Result<Vec<MxHost>, RouteError> {
    let mut hosts: Vec<MxHost> = records
        .into_iter()
        .filter_map(|r| match r {
            RData::MX(mx) => Some(MxHost {
                name: mx
                    .exchange
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase(),
                preference: mx.preference,
                implicit: false,
            }),
            _ => None,
        })
        .collect();
    // A null MX is a single record with an empty exchange ("."); mixed with
    // other records it is a configuration error and is ignored (RFC 7505 §3).
    let null = |h: &MxHost| h.name.is_empty();
    if hosts.len() == 1 && null(&hosts[0]) {
        return Err(RouteError::NullMx {
            domain: domain.into(),
        });
    }
    hosts.retain(|h| !null(h));
    if hosts.is_empty() {
        return Err(RouteError::NoAddress {
            name: domain.into(),
        });
    }
    fastrand::shuffle(&mut hosts);
    hosts.sort_by_key(|h| h.preference);
    hosts.truncate(MAX_MX_HOSTS);
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::rr::rdata::MX;
    use hickory_resolver::proto::rr::Name;

    fn mx(pref: u16, name: &str) -> RData {
        RData::MX(MX::new(pref, Name::from_ascii(name).unwrap()))
    }

    #[test]
    fn mx_sorted_by_preference_with_equal_ones_shuffled() {
        let mut seen_first = std::collections::BTreeSet::new();
        for _ in 0..64 {
            let hosts = order_mx(
                "example.org",
                vec![
                    mx(20, "c.example.org."),
                    mx(10, "a.example.org."),
                    mx(10, "b.example.org."),
                ],
            )
            .unwrap();
            assert_eq!(hosts[2].name, "c.example.org");
            assert_eq!(hosts[0].preference, 10);
            seen_first.insert(hosts[0].name.clone());
        }
        assert_eq!(seen_first.len(), 2, "equal preferences must be shuffled");
    }

    #[test]
    fn null_mx_rfc7505() {
        let e = order_mx("example.org", vec![mx(0, ".")]).unwrap_err();
        assert!(matches!(e, RouteError::NullMx { .. }));
        assert!(e.is_permanent());
        assert_eq!(e.status(), "5.1.10");
        // Mixed with real hosts, the null entry is ignored.
        let hosts = order_mx("example.org", vec![mx(0, "."), mx(10, "mx.example.org.")]).unwrap();
        assert_eq!(hosts.len(), 1);
    }

    #[test]
    fn security_is_secure_only_when_every_part_is() {
        use Security::{Insecure, Secure};
        assert_eq!(Secure.and(Secure), Secure);
        assert_eq!(Secure.and(Insecure), Insecure);
        assert_eq!(Insecure.and(Secure), Insecure);
        assert_eq!(serde_json::to_string(&Secure).unwrap(), "\"secure\"");
        assert_eq!(
            serde_json::from_str::<Security>("\"insecure\"").unwrap(),
            Insecure
        );
    }

    #[test]
    fn bogus_defers_rfc7672_section_2_1_1() {
        let e = RouteError::Bogus {
            name: "example.org".into(),
            rtype: "MX",
            reason: "bad signature".into(),
        };
        assert!(!e.is_permanent());
        assert_eq!(e.status(), "4.4.3");
        assert!(e.to_string().contains("DNSSEC"), "{e}");
    }

    #[test]
    fn cname_chain_is_followed_in_order_rfc7672_section_2_1_3() {
        use hickory_resolver::proto::rr::rdata::{A, CNAME};
        let n = |s: &str| Name::from_ascii(s).unwrap();
        let cname =
            |from: &str, to: &str| Record::from_rdata(n(from), 60, RData::CNAME(CNAME(n(to))));
        let answers = vec![
            // Out of order on purpose, plus one unrelated CNAME.
            cname("b.example.", "c.example."),
            cname("x.example.", "y.example."),
            cname("a.example.", "b.example."),
            Record::from_rdata(n("c.example."), 60, RData::A(A::new(192, 0, 2, 1))),
        ];
        let (end, chain) = follow_cnames(&n("a.example."), &answers);
        assert_eq!(end, n("c.example."));
        assert_eq!(chain.len(), 2);
        let (end, chain) = follow_cnames(&n("c.example."), &answers);
        assert_eq!(end, n("c.example."));
        assert!(chain.is_empty());
        // A loop stops instead of spinning.
        let looped = vec![
            cname("a.example.", "b.example."),
            cname("b.example.", "a.example."),
        ];
        let (_, chain) = follow_cnames(&n("a.example."), &looped);
        assert_eq!(chain.len(), 2);
    }

    #[test]
    fn names_are_shown_without_the_final_dot() {
        assert_eq!(
            display_name(&Name::from_ascii("MX.Example.").unwrap()),
            "mx.example"
        );
        assert_eq!(display_zone(&Name::root()), ".");
    }

    #[test]
    fn address_literals() {
        assert_eq!(
            address_literal("[192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            address_literal("[IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(address_literal("example.org"), None);
    }
}
