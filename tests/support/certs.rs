//! Certificates generated at run time for the fake peers: a private test CA,
//! leaf certificates it issues, and self-signed leaves.
//!
//! Nothing here is written to the repository; every test process makes fresh
//! keys, so no expiry date or key can go stale.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate chain and its private key, in DER (for rustls) and PEM
/// (for files handed to the binary).
pub struct CertifiedKey {
    /// Leaf first, then the issuing CA certificate when there is one.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The leaf's PKCS#8 private key.
    pub key: PrivateKeyDer<'static>,
    /// `cert_chain` in PEM, leaf first.
    pub cert_pem: String,
    /// `key` in PEM.
    pub key_pem: String,
    /// The leaf's SubjectPublicKeyInfo in DER, taken from its key pair
    /// (what a TLSA record with selector SPKI(1) is about).
    pub spki_der: Vec<u8>,
}

impl Clone for CertifiedKey {
    fn clone(&self) -> Self {
        Self {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
            spki_der: self.spki_der.clone(),
        }
    }
}

impl CertifiedKey {
    /// The leaf certificate (the one a DANE-EE record would match).
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.cert_chain[0]
    }

    /// A rustls server configuration presenting this chain, using the ring
    /// provider and rustls' default protocol versions (TLS 1.2 and 1.3).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())
            .expect("generated certificate and key match");
        Arc::new(config)
    }

    /// Like [`CertifiedKey::server_config`], with TLS 1.2 as the only
    /// protocol version.
    pub fn server_config_tls12(&self) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("ring supports TLS 1.2")
            .with_no_client_auth()
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())
            .expect("generated certificate and key match");
        Arc::new(config)
    }
}

/// A private certificate authority for one test.
pub struct TestCa {
    /// The CA certificate in PEM, for the binary's `[tls] ca_file`.
    pub ca_pem: String,
    /// The CA certificate in DER (a DANE-TA record would match this).
    pub ca_der: CertificateDer<'static>,
    /// The CA's SubjectPublicKeyInfo in DER.
    pub ca_spki_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// Makes a CA with a fresh key.
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params
            .distinguished_name
            .push(DnType::CommonName, "smarthost test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            ca_spki_der: key.subject_public_key_info(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate in PEM to `path`.
    pub fn write_pem(&self, path: impl AsRef<Path>) {
        let path = path.as_ref();
        std::fs::write(path, &self.ca_pem)
            .unwrap_or_else(|e| panic!("writing CA certificate to {}: {e}", path.display()));
    }

    /// Issues a server certificate for `names`: each one that parses as an IP
    /// address becomes an IP SAN, every other one a DNS SAN. The first name is
    /// also the subject CN. The chain is the leaf followed by the CA.
    pub fn issue(&self, names: &[&str]) -> CertifiedKey {
        let key = KeyPair::generate().expect("generate leaf key");
        let params = leaf_params(names);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign leaf certificate");
        CertifiedKey {
            cert_chain: vec![cert.der().clone(), self.ca_der.clone()],
            key: private_key(&key),
            cert_pem: format!("{}{}", cert.pem(), self.ca_pem),
            key_pem: key.serialize_pem(),
            spki_der: key.subject_public_key_info(),
        }
    }
}

/// A self-signed server certificate for `names` (same SAN rules as
/// [`TestCa::issue`]); no CA will vouch for it.
pub fn self_signed(names: &[&str]) -> CertifiedKey {
    self_signed_with(leaf_params(names))
}

/// A self-signed server certificate for `names` whose validity ended in
/// 2021 (valid from 2020-01-01 to 2021-01-01): a PKIX check refuses it, a
/// DANE-EE match ignores the dates (RFC 7672 §3.1.1).
pub fn self_signed_expired(names: &[&str]) -> CertifiedKey {
    let mut params = leaf_params(names);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    self_signed_with(params)
}

fn self_signed_with(params: CertificateParams) -> CertifiedKey {
    let key = KeyPair::generate().expect("generate leaf key");
    let cert = params
        .self_signed(&key)
        .expect("self-sign leaf certificate");
    CertifiedKey {
        cert_chain: vec![cert.der().clone()],
        key: private_key(&key),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        spki_der: key.subject_public_key_info(),
    }
}

/// SHA2-256 of `bytes`: TLSA association data for matching type
/// SHA2-256(1) (RFC 6698 §2.1.3), given a whole certificate (selector
/// Cert(0)) or a SubjectPublicKeyInfo (selector SPKI(1)).
pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// SHA2-512 of `bytes`, for matching type SHA2-512(2).
pub fn sha512(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA512, bytes)
        .as_ref()
        .to_vec()
}

fn leaf_params(names: &[&str]) -> CertificateParams {
    let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(sans)
        .unwrap_or_else(|e| panic!("invalid certificate names {names:?}: {e}"));
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

fn private_key(key: &KeyPair) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()))
}
