//! `smarthost probe DOMAIN`: the lookups and connections of a delivery,
//! without sending mail, and what the policy makes of each MX host, in the
//! manner of Postfix's posttls-finger.
//!
//! Each host goes through the same steps as a delivery: the MX answer and
//! its DNSSEC status, the host's addresses, its TLSA records where DANE can
//! apply, the [policy decision](crate::policy::decide), and then, for each
//! address, a session that stops after the EHLO that follows STARTTLS
//! (greeting, EHLO, STARTTLS, EHLO, QUIT). The verdict for a host is
//! whether a message with the probed requirements could be delivered
//! through it now.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::{connect, Agent, Destination};
use crate::envelope::SecurityRecord;
use crate::policy::{self, Authentication, HostDecision, HostFacts, TlsPlan, TlsaState};
use crate::routing::{MxHost, RouteError, Security};
use crate::smtp::{self, CertVerification, ErrorKind, SessionError, Stage};

/// What a probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeVerdict {
    /// A message could be delivered now.
    Deliverable,
    /// No host would take the message now.
    Undeliverable,
    /// DNS failed temporarily, so nothing can be said.
    DnsFailure,
}

/// The probe's report: the text to print and the verdict.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Human-readable lines, one finding per line.
    pub text: String,
    /// The verdict.
    pub verdict: ProbeVerdict,
}

impl Agent {
    /// Probes `domain` as a delivery of a message from `sender` with the
    /// given security record would see it.
    pub async fn probe(&self, domain: &str, sender: &str, record: &SecurityRecord) -> ProbeReport {
        let mut out = String::new();
        let dnssec = self.dnssec().await;
        let router = self.router().await;
        let relay = self.config.relayhost.is_some();
        let req = policy::requirements(record, &self.config, sender, domain, relay);
        let destination = Destination {
            label: self
                .config
                .relayhost
                .as_ref()
                .map_or_else(|| domain.to_owned(), |r| r.host.clone()),
            domain: domain.to_owned(),
            domains: vec![domain.to_owned()],
            relay,
            req: req.clone(),
        };
        let _ = writeln!(out, "domain {domain}");
        let _ = writeln!(
            out,
            "  message: {}",
            record
                .summary()
                .unwrap_or_else(|| "no requirements of its own".into())
        );
        let level = if relay {
            format!("relayhost {}", destination.label)
        } else {
            format!("level {}", req.level.as_str())
        };
        let _ = writeln!(out, "  policy: {level}; DNSSEC {}", describe_dnssec(dnssec));
        let (mx, port) = match self.hosts_for(router, &destination).await {
            Ok(v) => v,
            Err(e) => {
                let _ = writeln!(out, "  routing: {e}");
                let verdict = if e.is_permanent() {
                    ProbeVerdict::Undeliverable
                } else {
                    ProbeVerdict::DnsFailure
                };
                return ProbeReport { text: out, verdict };
            }
        };
        let mx_secure = mx.security == Security::Secure;
        if !relay {
            let kind = if mx.hosts.iter().any(|h| h.implicit) {
                "no MX records: implicit MX (RFC 5321 §5.1)"
            } else {
                "MX records"
            };
            let _ = writeln!(out, "  {kind}, DNSSEC {}", security_word(mx.security));
        }
        let mut deliverable = false;
        let mut dns_failures = 0;
        for host in &mx.hosts {
            let _ = writeln!(out, "host {} (preference {})", host.name, host.preference);
            let addresses = match router.addresses(&host.name, self.config.ip_family).await {
                Ok(a) => a,
                Err(e) => {
                    let _ = writeln!(out, "  addresses: {e}");
                    if matches!(e, RouteError::Temporary { .. } | RouteError::Bogus { .. }) {
                        dns_failures += 1;
                    }
                    continue;
                }
            };
            let shown: Vec<String> = addresses.ips.iter().map(IpAddr::to_string).collect();
            let _ = writeln!(
                out,
                "  addresses: {} (DNSSEC {})",
                shown.join(", "),
                security_word(addresses.security)
            );
            let address_secure = addresses.security == Security::Secure;
            let trusted_name = relay || mx_secure;
            let tlsa = self
                .host_tlsa(router, &req, trusted_name, host, &addresses, port)
                .await;
            let _ = writeln!(out, "  TLSA: {}", describe_tlsa(&tlsa, port));
            let facts = HostFacts {
                host: &host.name,
                recipient_domain: domain,
                mx_secure: trusted_name,
                address_secure,
                tlsa,
                dnssec,
                relay_tls: relay.then_some(self.config.relayhost_tls),
            };
            let plan = match policy::decide(&req, &facts) {
                HostDecision::Skip(r) => {
                    let _ = writeln!(out, "  not used: {} ({})", r.reason, r.status);
                    continue;
                }
                HostDecision::Use(plan) => plan,
            };
            let _ = writeln!(out, "  plan: {}", describe_plan(&plan));
            for &ip in &addresses.ips {
                if !self.family_allowed(ip) {
                    continue;
                }
                let (line, ok) = self.probe_address(host, ip, port, &plan).await;
                let _ = writeln!(out, "  {ip}: {line}");
                if ok {
                    deliverable = true;
                    break;
                }
            }
        }
        let verdict = if deliverable {
            ProbeVerdict::Deliverable
        } else if dns_failures > 0 {
            ProbeVerdict::DnsFailure
        } else {
            ProbeVerdict::Undeliverable
        };
        let _ = writeln!(
            out,
            "verdict: {}",
            match verdict {
                ProbeVerdict::Deliverable => "a message could be delivered now",
                ProbeVerdict::Undeliverable => "a message could not be delivered now",
                ProbeVerdict::DnsFailure => "DNS failed temporarily; try again later",
            }
        );
        ProbeReport { text: out, verdict }
    }

    /// One probe session; returns the line to print and whether the
    /// message could go this way.
    async fn probe_address(
        &self,
        host: &MxHost,
        ip: IpAddr,
        port: u16,
        plan: &TlsPlan,
    ) -> (String, bool) {
        let result = self
            .with_plaintext_retry(plan, |mode| self.probe_session(host, ip, port, plan, mode))
            .await;
        match result {
            Err(e) => (format!("fails: {e}"), false),
            Ok(p) => {
                let tls = match &p.tls {
                    None => "plaintext".to_owned(),
                    Some(t) => {
                        let check = match &t.verification {
                            CertVerification::Verified(m) => format!("verified by {m}"),
                            CertVerification::Failed(reason) => format!("not verified: {reason}"),
                            CertVerification::NotChecked => "certificate not checked".into(),
                        };
                        format!("{} {}, {check}", t.version, t.cipher)
                    }
                };
                let offered = if p.capabilities.requiretls {
                    "REQUIRETLS offered"
                } else {
                    "no REQUIRETLS"
                };
                if plan.requiretls {
                    let verified = p
                        .tls
                        .as_ref()
                        .is_some_and(|t| matches!(t.verification, CertVerification::Verified(_)));
                    if !verified {
                        return (
                            format!("{tls}; REQUIRETLS needs a verified certificate"),
                            false,
                        );
                    }
                    if !p.capabilities.requiretls {
                        return (
                            format!(
                                "{tls}; {offered}: a REQUIRETLS message would fail here (5.7.30)"
                            ),
                            false,
                        );
                    }
                }
                (format!("{tls}; {offered}; would deliver"), true)
            }
        }
    }

    async fn probe_session(
        &self,
        host: &MxHost,
        ip: IpAddr,
        port: u16,
        plan: &TlsPlan,
        tls_mode: smtp::TlsMode,
    ) -> Result<smtp::Probed, SessionError> {
        let cfg = self.session_config(plan, tls_mode, false);
        match connect::connect(
            ip,
            port,
            self.config.bind_address,
            self.config.connect_timeout,
        )
        .await
        {
            Ok(stream) => smtp::probe(stream, &cfg).await,
            Err(e) => Err(SessionError::new(
                Stage::Connect,
                host.name.clone(),
                ErrorKind::Io(e),
            )),
        }
    }
}

fn security_word(s: Security) -> &'static str {
    match s {
        Security::Secure => "secure",
        Security::Insecure => "insecure",
    }
}

fn describe_dnssec(d: &policy::Dnssec) -> String {
    match d {
        policy::Dnssec::Working => "validation working".into(),
        policy::Dnssec::Off => "validation off".into(),
        policy::Dnssec::Broken(reason) => format!("validation NOT working: {reason}"),
    }
}

fn describe_tlsa(t: &TlsaState, port: u16) -> String {
    match t {
        TlsaState::NotLooked => "not looked up (DANE does not apply to this host)".into(),
        TlsaState::None => format!("no DNSSEC-secure TLSA records at _{port}._tcp"),
        TlsaState::Secure { base, usable } if usable.is_empty() => {
            format!("_{port}._tcp.{base}: secure, but no usable record (RFC 7672 §3.1.3)")
        }
        TlsaState::Secure { base, usable } => {
            let records: Vec<String> = usable
                .iter()
                .map(|r| format!("{} {} {}", r.usage, r.selector, r.matching))
                .collect();
            format!(
                "_{port}._tcp.{base}: secure, usable: {}",
                records.join(", ")
            )
        }
        TlsaState::Failed(reason) => format!("lookup failed: {reason}"),
        TlsaState::Unvalidated => {
            format!("_{port}._tcp: records published, but DNSSEC validation is not working")
        }
    }
}

fn describe_plan(p: &TlsPlan) -> String {
    let tls = match p.starttls {
        policy::StartTls::Never => "no TLS",
        policy::StartTls::Opportunistic => "STARTTLS if offered",
        policy::StartTls::Required => "STARTTLS required",
        policy::StartTls::Implicit => "TLS from the first byte",
    };
    let check = match (&p.authentication, p.enforce) {
        (Authentication::Dane { .. }, true) => "DANE must match",
        (Authentication::Dane { .. }, false) => "DANE checked and recorded only",
        (Authentication::Pkix, true) => "PKIX must verify",
        (Authentication::Pkix, false) => "certificate recorded, not required",
        (Authentication::None, _) => "certificate not checked",
    };
    let mut text = format!("{tls}, {check}, SNI {}", p.server_name);
    if p.requiretls {
        text.push_str(", REQUIRETLS");
    }
    if p.plaintext_retry {
        text.push_str(", plaintext retry allowed");
    }
    text
}
