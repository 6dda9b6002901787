//! DANE (RFC 7672) certificate verification: which TLSA records can be
//! used, and a rustls verifier that authenticates a server against them.
//!
//! Only DANE-TA(2) and DANE-EE(3) are supported, as RFC 7672 §3.1.3 allows
//! for SMTP. DANE-EE compares the end-entity certificate alone and ignores
//! names and dates (RFC 7672 §3.1.1, RFC 7671 §5.1). DANE-TA finds a trust
//! anchor among the presented certificates, builds a path to it from the
//! end entity using only the presented certificates, checks dates along
//! that path, and matches the end entity's names against the reference
//! names (RFC 7672 §3.1.2, §3.2.2, §3.2.3).
//!
//! This module owns no DNS and no PKIX: the caller supplies the (DNSSEC
//! validated) records and the reference names, and a PKIX success never
//! rescues a DANE failure.

use std::sync::{Arc, Mutex, PoisonError};

use ring::digest;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::tlsa::{
    Tlsa, MATCHING_FULL, MATCHING_SHA256, MATCHING_SHA512, SELECTOR_CERT, SELECTOR_SPKI,
    USAGE_DANE_EE, USAGE_DANE_TA,
};
use crate::smtp::tls::{AuthMethod, CertVerification, VerificationSlot};

/// The reason recorded when no record matched any presented certificate.
const NO_MATCH: &str = "no TLSA record matched the certificate chain";

/// Filters a TLSA RRset down to the records this client can use.
///
/// A record is usable when its usage is DANE-TA(2) or DANE-EE(3) (RFC 7672
/// §3.1.3: PKIX-TA(0) and PKIX-EE(1) are treated as unusable), its
/// selector is Cert(0) or SPKI(1), and its matching type is Full(0) with
/// non-empty data, SHA2-256(1) with 32 octets or SHA2-512(2) with 64 octets
/// (RFC 6698 §4.1: unknown parameters and malformed data are unusable).
///
/// Digest agility (RFC 7671 §9, RFC 7672 §5): for each usage and selector,
/// Full records are kept, and of the digest records only those of the
/// strongest digest type present (SHA2-512 over SHA2-256), so that a
/// weakened digest cannot be used once the stronger one is published.
pub fn usable(records: &[Tlsa]) -> Vec<Tlsa> {
    let wellformed: Vec<&Tlsa> = records.iter().filter(|r| is_wellformed(r)).collect();
    let strongest = |usage: u8, selector: u8| {
        wellformed
            .iter()
            .filter(|r| r.usage == usage && r.selector == selector)
            .map(|r| digest_strength(r.matching))
            .max()
            .unwrap_or(0)
    };
    let mut out: Vec<Tlsa> = Vec::new();
    for record in wellformed.iter().copied() {
        let keep = record.matching == MATCHING_FULL
            || digest_strength(record.matching) == strongest(record.usage, record.selector);
        if keep && !out.contains(record) {
            out.push(record.clone());
        }
    }
    out
}

fn is_wellformed(record: &Tlsa) -> bool {
    let usage = matches!(record.usage, USAGE_DANE_TA | USAGE_DANE_EE);
    let selector = matches!(record.selector, SELECTOR_CERT | SELECTOR_SPKI);
    let data = match record.matching {
        MATCHING_FULL => !record.data.is_empty(),
        MATCHING_SHA256 => record.data.len() == 32,
        MATCHING_SHA512 => record.data.len() == 64,
        _ => false,
    };
    usage && selector && data
}

/// Ranks digest matching types; Full is 0 so it never wins the ranking.
fn digest_strength(matching: u8) -> u8 {
    match matching {
        MATCHING_SHA256 => 1,
        MATCHING_SHA512 => 2,
        _ => 0,
    }
}

/// The SubjectPublicKeyInfo DER (with its outer SEQUENCE) of a certificate.
///
/// webpki's trust-anchor extraction is used rather than an X.509 parser:
/// it accepts any certificate (end entity or CA, and v1 certificates,
/// which `EndEntityCert` refuses), and `spki_for_anchor` restores the
/// outer SEQUENCE that TLSA selector 1 hashes over.
fn spki_of(cert: &[u8]) -> Option<Vec<u8>> {
    let der = CertificateDer::from(cert);
    let anchor = webpki::anchor_from_trusted_cert(&der).ok()?;
    Some(webpki::spki_for_anchor(&anchor).as_ref().to_vec())
}

/// Whether `record` matches the certificate `cert` (DER).
fn record_matches(record: &Tlsa, cert: &[u8]) -> bool {
    let spki;
    let selected: &[u8] = match record.selector {
        SELECTOR_CERT => cert,
        SELECTOR_SPKI => match spki_of(cert) {
            Some(found) => {
                spki = found;
                &spki
            }
            None => return false,
        },
        _ => return false,
    };
    match record.matching {
        MATCHING_FULL => selected == record.data.as_slice(),
        MATCHING_SHA256 => digest::digest(&digest::SHA256, selected).as_ref() == record.data,
        MATCHING_SHA512 => digest::digest(&digest::SHA512, selected).as_ref() == record.data,
        _ => false,
    }
}

/// A DANE-TA trust anchor candidate.
struct Anchor {
    /// The anchor's certificate, presented or from a `2 0 0` record.
    cert: CertificateDer<'static>,
    /// Whether it matched only by public key (selector SPKI).
    key_only: bool,
}

/// A rustls certificate verifier for DANE-EE and DANE-TA (RFC 7672 §3).
///
/// It records its verdict in a [`VerificationSlot`] and, when enforcing,
/// fails the handshake on a mismatch. Handshake signatures are always
/// checked.
#[derive(Debug)]
pub struct DaneVerifier {
    records: Vec<Tlsa>,
    reference_names: Vec<String>,
    provider: Arc<CryptoProvider>,
    enforce: bool,
    slot: VerificationSlot,
}

impl DaneVerifier {
    /// A verifier for `records`, which should be the output of [`usable`]
    /// (an empty set matches nothing). `reference_names` are the names a
    /// DANE-TA end entity must carry (RFC 7672 §3.2.2: the TLSA base
    /// domain, plus the original and expanded next-hop domain when the MX
    /// lookup was secure), as A-labels without a trailing dot.
    ///
    /// With `enforce` false the verdict is recorded but the handshake goes
    /// ahead anyway (mail marked `TLS-Required: No`, RFC 8689 §4.2.2).
    pub fn new(
        records: Vec<Tlsa>,
        reference_names: Vec<String>,
        provider: Arc<CryptoProvider>,
        enforce: bool,
    ) -> Self {
        Self {
            records,
            reference_names,
            provider,
            enforce,
            slot: Arc::new(Mutex::new(None)),
        }
    }

    /// The slot the verdict is written to.
    pub fn slot(&self) -> VerificationSlot {
        self.slot.clone()
    }

    fn record(&self, outcome: CertVerification) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(outcome);
    }

    /// Authenticates the presented chain; `Err` carries the reason.
    fn evaluate(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<AuthMethod, String> {
        // DANE-EE: the leaf alone, no names, no dates (RFC 7672 §3.1.1).
        let ee_match = self
            .records
            .iter()
            .filter(|r| r.usage == USAGE_DANE_EE)
            .any(|r| record_matches(r, end_entity));
        if ee_match {
            return Ok(AuthMethod::DaneEe);
        }
        let anchors = self.ta_candidates(end_entity, intermediates);
        if anchors.is_empty() {
            return Err(NO_MATCH.to_owned());
        }
        let leaf = ParsedCertificate::try_from(end_entity)
            .map_err(|err| format!("DANE-TA: unparseable end-entity certificate: {err}"))?;
        let mut path_error = None;
        for anchor in &anchors {
            match self.path_to(&leaf, end_entity, anchor, intermediates, now) {
                Ok(()) => return self.check_names(&leaf, end_entity),
                Err(err) => path_error = Some(err),
            }
        }
        let err = path_error.map_or_else(String::new, |e| e.to_string());
        Err(format!(
            "DANE-TA: no valid path to a matching trust anchor: {err}"
        ))
    }

    /// The certificates that can serve as the DANE-TA trust anchor: every
    /// presented certificate matching a DANE-TA record, then the full
    /// certificates carried in `2 0 0` records themselves (RFC 7672 §3.1.2:
    /// the anchor must be presented unless the record holds all of it).
    ///
    /// LIMITATION: a `2 1 0` record (a bare public key) is only usable when
    /// the server presents the certificate carrying that key; building an
    /// anchor from the key alone would need the anchor's subject name,
    /// which the record does not hold.
    fn ta_candidates(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Vec<Anchor> {
        let ta_records: Vec<&Tlsa> = self
            .records
            .iter()
            .filter(|r| r.usage == USAGE_DANE_TA)
            .collect();
        let mut anchors: Vec<Anchor> = Vec::new();
        let presented = std::iter::once(end_entity).chain(intermediates);
        for cert in presented {
            let matching: Vec<&&Tlsa> = ta_records
                .iter()
                .filter(|r| record_matches(r, cert))
                .collect();
            if !matching.is_empty() {
                anchors.push(Anchor {
                    cert: cert.clone().into_owned(),
                    key_only: matching.iter().all(|r| r.selector == SELECTOR_SPKI),
                });
            }
        }
        for record in &ta_records {
            let full_cert = record.selector == SELECTOR_CERT && record.matching == MATCHING_FULL;
            let cert = CertificateDer::from(record.data.clone());
            if full_cert && !anchors.iter().any(|a| a.cert == cert) {
                anchors.push(Anchor {
                    cert,
                    key_only: false,
                });
            }
        }
        anchors
    }

    /// Validates the path from the leaf to `anchor` over the presented
    /// intermediates, dates included (RFC 7672 §3.1.2).
    fn path_to(
        &self,
        leaf: &ParsedCertificate<'_>,
        leaf_der: &CertificateDer<'_>,
        anchor: &Anchor,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        // The leaf itself matched a DANE-TA record: it is its own trust
        // anchor and there is no path to validate (RFC 5280 §6.1 checks
        // no dates on the anchor). Its names are still checked.
        if anchor.cert.as_ref() == leaf_der.as_ref() {
            return Ok(());
        }
        let mut trust_anchor = webpki::anchor_from_trusted_cert(&anchor.cert)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?
            .to_owned();
        // Only the key is trusted when the record selects the SPKI, so the
        // certificate's name constraints do not bind (RFC 7671 §5.2);
        // with selector Cert(0) they do.
        if anchor.key_only {
            trust_anchor.name_constraints = None;
        }
        let roots = RootCertStore {
            roots: vec![trust_anchor],
        };
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            leaf,
            &roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )
    }

    /// Matches the leaf against the reference names (RFC 7672 §3.2.2,
    /// §3.2.3): its SAN DNS-IDs, wildcards only as the whole left-most
    /// label; the last subject CN only when there is no DNS-ID at all.
    fn check_names(
        &self,
        leaf: &ParsedCertificate<'_>,
        leaf_der: &CertificateDer<'_>,
    ) -> Result<AuthMethod, String> {
        let by_san = self.reference_names.iter().any(|name| {
            ServerName::try_from(name.as_str())
                .is_ok_and(|sn| rustls::client::verify_server_name(leaf, &sn).is_ok())
        });
        if by_san || self.matches_cn(leaf_der) {
            Ok(AuthMethod::DaneTa)
        } else {
            Err(format!(
                "DANE-TA: no reference name matched: {}",
                self.reference_names.join(", ")
            ))
        }
    }

    /// The CN fallback: only for a leaf without DNS-IDs.
    fn matches_cn(&self, leaf_der: &CertificateDer<'_>) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(leaf_der) else {
            return false;
        };
        if cert.valid_dns_names().next().is_some() {
            return false;
        }
        let Some(cn) = cn::last_common_name(cert.subject()) else {
            return false;
        };
        self.reference_names
            .iter()
            .any(|name| cn::name_matches(&cn, name))
    }
}

impl ServerCertVerifier for DaneVerifier {
    /// `server_name` is the SNI (the TLSA base domain, set by the caller);
    /// names are checked against the reference names instead.
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.evaluate(end_entity, intermediates, now) {
            Ok(method) => {
                self.record(CertVerification::Verified(method));
                Ok(ServerCertVerified::assertion())
            }
            Err(reason) => {
                self.record(CertVerification::Failed(reason.clone()));
                if self.enforce {
                    Err(rustls::Error::InvalidCertificate(
                        CertificateError::ApplicationVerificationFailure,
                    ))
                } else {
                    Ok(ServerCertVerified::assertion())
                }
            }
        }
    }

    crate::smtp::tls::handshake_signatures!();
}

mod cn;

#[cfg(test)]
mod tests;
