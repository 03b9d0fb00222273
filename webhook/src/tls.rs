//! TLS for the admission server: rustls with a certificate that can change
//! under a running server, and a generated one for running with no set-up.
//!
//! The API server only talks HTTPS to webhooks, and certificates rotate
//! (cert-manager renews them into the mounted Secret). [`ReloadingCertificate`]
//! answers every handshake with the current certificate; `reload` swaps in the
//! files' new contents when they parse and the key matches, and otherwise keeps the
//! old certificate and reports why, so a half-written or garbage file never takes
//! the server down.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate could not be used.
/// Each message ends with its cause, which is therefore not also a `source()`:
/// log lines show only the message, and `{:#}` chains would print the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a PEM certificate chain: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("{path} is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("the key {key} does not belong to the certificate {cert}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("could not write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("could not generate a certificate: {0}")]
    Generate(String),
}

/// The certificate and key files the server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertificateFiles {
    /// Both files' paths, certificate first.
    pub fn paths(&self) -> [PathBuf; 2] {
        [self.cert.clone(), self.key.clone()]
    }

    /// Reads both files and checks that they belong together.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|cause| TlsError::Read {
                path: path.to_path_buf(),
                cause,
            })
        };
        let (cert_pem, key_pem) = (read(&self.cert)?, read(&self.key)?);
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::BadCertificate {
                path: self.cert.clone(),
                message: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.cert.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
            path: self.key.clone(),
            message: e.to_string(),
        })?;
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
        let certified =
            CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
                message: e.to_string(),
            })?;
        Ok(Arc::new(certified))
    }
}

/// A certificate resolver whose certificate can be replaced while serving.
pub struct ReloadingCertificate {
    files: CertificateFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertificate {
    /// Loads the files; fails when they are not usable (at start-up there is no
    /// old certificate to fall back on).
    pub fn new(files: CertificateFiles) -> Result<Self, TlsError> {
        let current = RwLock::new(files.load()?);
        Ok(Self { files, current })
    }

    pub fn files(&self) -> &CertificateFiles {
        &self.files
    }

    /// Re-reads the files. On error the certificate in use stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = self.files.load()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A rustls server configuration that serves this certificate, speaking
    /// HTTP/2 and HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Files of a generated CA and a serving certificate it signed.
#[derive(Debug, Clone)]
pub struct GeneratedCertificate {
    /// The CA certificate: what clients (and a webhook's `caBundle`) trust.
    pub ca: PathBuf,
    pub files: CertificateFiles,
}

/// Makes a CA and a serving certificate for `names` (DNS names or IP addresses)
/// in `dir`, or reuses the ones a previous run left there, so the CA a user
/// copied into a webhook configuration stays valid across restarts.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<GeneratedCertificate, TlsError> {
    let generated = GeneratedCertificate {
        ca: dir.join("ca.crt"),
        files: CertificateFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        },
    };
    if generated.ca.is_file() && generated.files.load().is_ok() {
        return Ok(generated);
    }
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "stsguard generated CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(generate)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = rcgen::KeyPair::generate().map_err(generate)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(generate)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().map_or("stsguard", |n| n.as_str()),
    );
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;

    std::fs::create_dir_all(dir).map_err(|cause| TlsError::Write {
        path: dir.to_path_buf(),
        cause,
    })?;
    write_file(&generated.ca, ca_cert.pem().as_bytes(), false)?;
    write_file(&generated.files.key, key.serialize_pem().as_bytes(), true)?;
    write_file(&generated.files.cert, cert.pem().as_bytes(), false)?;
    Ok(generated)
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let error = |cause| TlsError::Write {
        path: path.to_path_buf(),
        cause,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into()]
    }

    #[test]
    fn a_missing_file_is_named_and_its_cause_told_once() {
        let files = CertificateFiles {
            cert: "/nonexistent/tls.crt".into(),
            key: "/nonexistent/tls.key".into(),
        };
        let error = anyhow::Error::new(files.load().unwrap_err());
        let chain = format!("{error:#}");
        assert!(
            chain.starts_with("could not read /nonexistent/tls.crt: "),
            "{chain}"
        );
        assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
    }

    #[test]
    fn generated_certificates_load_and_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed(dir.path(), &names()).unwrap();
        first.files.load().unwrap();
        let ca = std::fs::read(&first.ca).unwrap();
        let again = self_signed(dir.path(), &names()).unwrap();
        assert_eq!(
            std::fs::read(&again.ca).unwrap(),
            ca,
            "an existing CA is kept"
        );
        let mode = std::fs::metadata(&first.files.key).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn garbage_keeps_the_old_certificate_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let generated = self_signed(dir.path(), &names()).unwrap();
        let resolver = ReloadingCertificate::new(generated.files.clone()).unwrap();
        let before = resolver.current();
        std::fs::write(&generated.files.cert, "garbage").unwrap();
        let error = resolver.reload().unwrap_err().to_string();
        assert!(
            error.contains("tls.crt") && error.contains("no PEM certificate"),
            "{error}"
        );
        assert!(Arc::ptr_eq(&before, &resolver.current()));
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = self_signed(a.path(), &names()).unwrap();
        let second = self_signed(b.path(), &names()).unwrap();
        let mixed = CertificateFiles {
            cert: first.files.cert,
            key: second.files.key,
        };
        let error = mixed.load().unwrap_err().to_string();
        assert!(error.contains("does not belong"), "{error}");
    }
}
