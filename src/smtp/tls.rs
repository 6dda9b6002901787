//! TLS for the SMTP client: the per-session rustls configuration, the
//! certificate verifier that records its verdict, and what is reported
//! about a negotiated TLS session.
//!
//! Opportunistic STARTTLS (RFC 3207, RFC 7435) encrypts even when the
//! certificate does not verify, so the verifier has two duties: run the
//! PKIX check (RFC 5280 path validation, RFC 6125 name match against the
//! configured server name) and remember the outcome, and reject the
//! handshake on failure only when the session's policy demands it.
//! Handshake signatures are always checked, whatever the policy.
//!
//! DANE (RFC 7672) is checked by [`DaneVerifier`] instead, built by
//! [`dane_client_config`].

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::policy::dane::DaneVerifier;
use crate::policy::tlsa::Tlsa;

/// How a server certificate was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// PKIX: a chain to a trusted root and a name match (RFC 5280, RFC 6125).
    Pkix,
    /// DANE-EE(3): the end-entity key or certificate matched a TLSA record
    /// (RFC 7672 §3.1.1).
    DaneEe,
    /// DANE-TA(2): the chain led to a trust anchor that matched a TLSA
    /// record, and a reference name matched (RFC 7672 §3.1.2, §3.2.2).
    DaneTa,
}

impl AuthMethod {
    /// The name used in logs and the queue: `pkix`, `dane-ee`, `dane-ta`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pkix => "pkix",
            Self::DaneEe => "dane-ee",
            Self::DaneTa => "dane-ta",
        }
    }
}

impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The handshake-signature half of a rustls `ServerCertVerifier`, the same
/// for every verifier here: signatures are always checked with the
/// verifier's `provider` field, whatever the certificate policy (DANE or
/// PKIX, enforced or recorded). Used inside the trait impl.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
pub(crate) use handshake_signatures;

/// The outcome of the certificate check for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertVerification {
    /// The certificate was authenticated by this method.
    Verified(AuthMethod),
    /// The check failed, for the reason given by the verifier.
    Failed(String),
    /// No check was made (the policy did not ask for one).
    NotChecked,
}

/// What was negotiated on a TLS session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version, as `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// Cipher suite, by its IANA name (`TLS13_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// How the certificate check went.
    pub verification: CertVerification,
    /// The certificate chain the server sent, end entity first.
    pub peer_certificates: Vec<CertificateDer<'static>>,
}

/// What the verifier does with a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyPolicy {
    /// Check and record; accept the certificate even when the check fails.
    RecordOnly,
    /// Check, record, and fail the handshake when the check fails.
    Enforce,
    /// Do not check; record [`CertVerification::NotChecked`].
    Skip,
}

/// Where the verifier leaves its verdict, to be read after the handshake.
pub type VerificationSlot = Arc<Mutex<Option<CertVerification>>>;

/// A rustls certificate verifier that runs webpki PKIX validation against
/// a fixed server name, records the outcome in a [`VerificationSlot`], and
/// accepts or rejects according to its [`VerifyPolicy`].
#[derive(Debug)]
pub struct PkixVerifier {
    /// The webpki verifier; `None` when there are no trust anchors (the
    /// only way its builder fails without CRLs), in which case every
    /// check fails.
    pkix: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    policy: VerifyPolicy,
    slot: VerificationSlot,
}

impl PkixVerifier {
    /// A verifier trusting `roots`, using `provider` for signatures.
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        policy: VerifyPolicy,
    ) -> Self {
        let pkix = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .ok()
        };
        Self {
            pkix,
            provider,
            policy,
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

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let Some(pkix) = &self.pkix else {
            return Err(rustls::Error::General("no trust anchors configured".into()));
        };
        pkix.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ())
    }
}

impl ServerCertVerifier for PkixVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.policy == VerifyPolicy::Skip {
            self.record(CertVerification::NotChecked);
            return Ok(ServerCertVerified::assertion());
        }
        match self.check(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(()) => {
                self.record(CertVerification::Verified(AuthMethod::Pkix));
                Ok(ServerCertVerified::assertion())
            }
            Err(err) => {
                self.record(CertVerification::Failed(err.to_string()));
                match self.policy {
                    VerifyPolicy::Enforce => Err(err),
                    VerifyPolicy::RecordOnly | VerifyPolicy::Skip => {
                        Ok(ServerCertVerified::assertion())
                    }
                }
            }
        }
    }

    crate::smtp::tls::handshake_signatures!();
}

/// The lowest TLS version a session may negotiate. There is nothing below
/// 1.2: RFC 8689 §4.2.1 and RFC 9325 §3.1 ask for TLS 1.2 or later.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 (RFC 8446).
    #[serde(rename = "1.3")]
    Tls13,
}

/// A TLS version other than `1.2` or `1.3` was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported TLS version {0:?} (expected 1.2 or 1.3)")]
pub struct UnknownTlsVersion(pub String);

impl std::str::FromStr for TlsVersion {
    type Err = UnknownTlsVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "1.2" => Ok(Self::Tls12),
            "1.3" => Ok(Self::Tls13),
            other => Err(UnknownTlsVersion(other.to_owned())),
        }
    }
}

/// The rustls protocol versions allowed from `min` upwards (default 1.2).
fn protocol_versions(
    min: Option<TlsVersion>,
) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        None | Some(TlsVersion::Tls12) => &BOTH,
        Some(TlsVersion::Tls13) => &TLS13_ONLY,
    }
}

fn config_with_verifier(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    min_version: Option<TlsVersion>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(protocol_versions(min_version))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Builds a client configuration for one session: the ring provider (never
/// the process default), TLS 1.2 and 1.3 only, or 1.3 only when
/// `min_version` says so (see [`TlsVersion`]), and a [`PkixVerifier`].
/// Returns the configuration and the slot holding the verifier's verdict.
pub fn client_config(
    roots: Arc<RootCertStore>,
    policy: VerifyPolicy,
    min_version: Option<TlsVersion>,
) -> Result<(Arc<ClientConfig>, VerificationSlot), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PkixVerifier::new(roots, provider.clone(), policy);
    let slot = verifier.slot();
    let config = config_with_verifier(provider, Arc::new(verifier), min_version)?;
    Ok((config, slot))
}

/// Builds a client configuration that authenticates the server by DANE
/// (RFC 7672): like [`client_config`], with a [`DaneVerifier`] for
/// `records` (the output of [`crate::policy::dane::usable`]) and
/// `reference_names` (for DANE-TA). With `enforce` false a mismatch is
/// recorded but does not fail the handshake. The caller sets the SNI to
/// the TLSA base domain (RFC 7672 §8.1).
pub fn dane_client_config(
    records: Vec<Tlsa>,
    reference_names: Vec<String>,
    enforce: bool,
    min_version: Option<TlsVersion>,
) -> Result<(Arc<ClientConfig>, VerificationSlot), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = DaneVerifier::new(records, reference_names, provider.clone(), enforce);
    let slot = verifier.slot();
    let config = config_with_verifier(provider, Arc::new(verifier), min_version)?;
    Ok((config, slot))
}

/// The name of a TLS version as logs and headers show it: `TLSv1.3`.
pub fn version_name(version: Option<rustls::ProtocolVersion>) -> String {
    match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_owned(),
    }
}

/// Reads the negotiated parameters from an established client connection.
pub fn tls_info(conn: &rustls::ClientConnection, verification: CertVerification) -> TlsInfo {
    let version = version_name(conn.protocol_version());
    let cipher = conn
        .negotiated_cipher_suite()
        .map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite()));
    let peer_certificates = conn
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    TlsInfo {
        version,
        cipher,
        verification,
        peer_certificates,
    }
}

/// Takes the verdict out of the slot; `NotChecked` when the verifier never
/// ran (a resumed session).
pub fn take_verdict(slot: &VerificationSlot) -> CertVerification {
    slot.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .unwrap_or(CertVerification::NotChecked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_version_parses_1_2_and_1_3_only() {
        assert_eq!("1.2".parse::<TlsVersion>(), Ok(TlsVersion::Tls12));
        assert_eq!("1.3".parse::<TlsVersion>(), Ok(TlsVersion::Tls13));
        for bad in ["1.1", "1.0", "TLSv1.2", "", "1.4"] {
            assert!(bad.parse::<TlsVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn min_version_never_allows_below_1_2_rfc9325_section_3_1() {
        let v = |min| -> Vec<rustls::ProtocolVersion> {
            protocol_versions(min).iter().map(|v| v.version).collect()
        };
        let both = vec![
            rustls::ProtocolVersion::TLSv1_3,
            rustls::ProtocolVersion::TLSv1_2,
        ];
        assert_eq!(v(None), both);
        assert_eq!(v(Some(TlsVersion::Tls12)), both);
        assert_eq!(
            v(Some(TlsVersion::Tls13)),
            vec![rustls::ProtocolVersion::TLSv1_3]
        );
    }
}
