//! The listener's STARTTLS certificate (RFC 3207): the configured
//! `[listen] cert_file`/`key_file`, or a self-signed one made on first
//! start and kept in `<queue_dir>/listener/` (RFC 8689 §2 needs STARTTLS
//! before a local MTA may pass REQUIRETLS; a client on loopback has no
//! name to verify, so a self-signed certificate serves).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::queue::QueueDir;

/// A certificate that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate and key do not make a TLS configuration.
    #[error("{cert}: cannot use this certificate and key: {source}")]
    Tls {
        /// The certificate file.
        cert: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// A self-signed certificate could not be made.
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The certificate and key files to use: the configured ones, or the
/// self-signed pair beside the queue (made when missing).
pub fn certificate_files(config: &Config, dir: &QueueDir) -> Result<(PathBuf, PathBuf), CertError> {
    if let (Some(cert), Some(key)) = (&config.listen.cert_file, &config.listen.key_file) {
        return Ok((cert.clone(), key.clone()));
    }
    let home = dir.root().join("listener");
    let cert = home.join("cert.pem");
    let key = home.join("key.pem");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&home)
        .map_err(io(&home))?;
    let names = vec![config.hostname.clone(), "localhost".to_owned()];
    let made = rcgen::generate_simple_self_signed(names)?;
    write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
    write_private(&cert, made.cert.pem().as_bytes())?;
    tracing::info!(cert = %cert.display(), "made a self-signed certificate for STARTTLS");
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CertError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3) from PEM
/// files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, CertError> {
    let pem = |path: &Path, reason: String| CertError::Pem {
        path: path.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem(cert, "no certificate in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key_der))
        .map_err(|source| CertError::Tls {
            cert: cert.to_owned(),
            source,
        })?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn self_signed_certificate_is_made_once_and_kept_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = QueueDir::at(tmp.path());
        let config = Config::from_toml("hostname = \"mx.example.net\"", None).unwrap();
        let (cert, key) = certificate_files(&config, &dir).unwrap();
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = fs::read(&cert).unwrap();
        let (cert2, _) = certificate_files(&config, &dir).unwrap();
        assert_eq!(fs::read(cert2).unwrap(), first);
        server_config(&cert, &key).unwrap();
    }
}
