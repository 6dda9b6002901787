//! Routing: from a recipient domain to the hosts and addresses to try.
//!
//! RFC 5321 §5.1: look up the MX records; sort them by preference and shuffle
//! hosts of equal preference; with no MX records, the domain itself is the
//! one host (the implicit MX); a null MX (RFC 7505) means the domain accepts
//! no mail. A name that does not exist is a permanent failure; a DNS failure
//! (SERVFAIL, timeout) is temporary and the delivery is deferred, never
//! treated as "no records".
//!
//! This module answers "where", not "how safely": the DNSSEC status of each
//! answer is kept for the TLS policy layer.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

use crate::config::{Config, IpFamily};

/// At most this many MX hosts are tried per domain, as MTAs commonly cap
/// the list (Postfix tries 5 addresses, chasquid 5 hosts).
const MAX_MX_HOSTS: usize = 10;

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
    /// The lookup failed (SERVFAIL, timeout, bogus answer): try later.
    #[error("{name} {rtype}: DNS lookup failed: {reason}")]
    Temporary {
        /// The name.
        name: String,
        /// The record type asked for.
        rtype: &'static str,
        /// The resolver's account.
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
            Self::Temporary { .. } | Self::Setup { .. } => false,
        }
    }

    /// The enhanced status code (RFC 3463, RFC 7505 §4.1) for a report.
    pub fn status(&self) -> &'static str {
        match self {
            Self::NullMx { .. } => "5.1.10",
            Self::NotFound { .. } | Self::NoAddress { .. } => "5.1.2",
            Self::Temporary { .. } | Self::Setup { .. } => "4.4.3",
        }
    }
}

/// An answer's records, or "no such name" / "no such records".
enum Answer {
    Records(Vec<RData>),
    NxDomain,
    NoData,
}

/// The resolver used for delivery.
pub struct Router {
    resolver: TokioResolver,
}

impl Router {
    /// Builds the resolver: the configured nameservers, or the system's
    /// `/etc/resolv.conf`.
    pub fn new(config: &Config) -> Result<Self, RouteError> {
        let setup = |e: NetError| RouteError::Setup {
            reason: e.to_string(),
        };
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 2;
        // Names are always fully qualified here; no search list.
        opts.ndots = 0;
        let builder = if config.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(setup)?
        } else {
            let servers = config.nameservers.iter().map(nameserver).collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let resolver = builder.with_options(opts).build().map_err(setup)?;
        Ok(Self { resolver })
    }

    /// The hosts to try for `domain`, best first.
    pub async fn mx_hosts(&self, domain: &str) -> Result<Vec<MxHost>, RouteError> {
        if let Some(ip) = address_literal(domain) {
            return Ok(vec![MxHost {
                name: ip.to_string(),
                preference: 0,
                implicit: true,
            }]);
        }
        match self.lookup(domain, RecordType::MX).await? {
            Answer::NxDomain => Err(RouteError::NotFound {
                name: domain.into(),
            }),
            // RFC 5321 §5.1: no MX records, the domain is its own MX.
            Answer::NoData => Ok(vec![MxHost {
                name: domain.into(),
                preference: 0,
                implicit: true,
            }]),
            Answer::Records(records) => order_mx(domain, records),
        }
    }

    /// The addresses of a host, IPv6 first, filtered by family. A host
    /// without addresses is [`RouteError::NoAddress`].
    pub async fn addresses(&self, host: &str, family: IpFamily) -> Result<Vec<IpAddr>, RouteError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let mut found = Vec::new();
        let mut exists = false;
        let types: &[RecordType] = match family {
            IpFamily::Any => &[RecordType::AAAA, RecordType::A],
            IpFamily::Ipv4 => &[RecordType::A],
            IpFamily::Ipv6 => &[RecordType::AAAA],
        };
        for &rtype in types {
            match self.lookup(host, rtype).await? {
                Answer::Records(records) => {
                    exists = true;
                    found.extend(records.into_iter().filter_map(|r| match r {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                        _ => None,
                    }));
                }
                Answer::NoData => exists = true,
                Answer::NxDomain => {}
            }
        }
        if found.is_empty() {
            return Err(if exists {
                RouteError::NoAddress { name: host.into() }
            } else {
                RouteError::NotFound { name: host.into() }
            });
        }
        Ok(found)
    }

    async fn lookup(&self, name: &str, rtype: RecordType) -> Result<Answer, RouteError> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.lookup(fqdn.as_str(), rtype).await {
            Ok(lookup) => {
                let records: Vec<RData> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| r.data.clone())
                    .collect();
                Ok(if records.is_empty() {
                    Answer::NoData
                } else {
                    Answer::Records(records)
                })
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(no))) => {
                Ok(if no.response_code == ResponseCode::NXDomain {
                    Answer::NxDomain
                } else {
                    Answer::NoData
                })
            }
            Err(e) => Err(RouteError::Temporary {
                name: name.into(),
                rtype: rtype_name(rtype),
                reason: e.to_string(),
            }),
        }
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
