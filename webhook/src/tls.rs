//! TLS for the admission server: rustls with a certificate that can change
//! under a running server, and a generated one for running with no set-up.
//!
//! The API server only talks HTTPS to webhooks, and certificates rotate
//! (cert-manager renews them into the mounted Secret). [`ReloadingCertificate`]
//! answers every handshake with the current certificate; `reload` swaps in the
//! files' new contents when they parse and the key matches, and otherwise keeps the
//! old certificate and reports why, so a half-written or garbage file never takes
//! the server down.
//!
//! Without a certificate, [`self_signed`] makes a CA and a certificate it signed,
//! and a later run uses them again while they cover the names asked for and are
//! not about to expire, so the CA a user copied into a webhook stays valid across
//! restarts, and a name added with `--tls-san` is not silently left out.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
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
    #[error(
        "a certificate cannot name {names}: give DNS names (like stsguard.default.svc \
         or *.example.com) or IP addresses"
    )]
    BadName { names: String },
}

/// The crypto provider rustls was set up with, else ring (as in unit tests).
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The certificates of a PEM bundle, as roots a client trusts (the CA `bench`
/// and `smoke-test` check their server against).
pub fn trust_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let bad = |message: String| TlsError::BadCertificate {
        path: path.to_path_buf(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::Io(cause) => TlsError::Read {
            path: path.to_path_buf(),
            cause,
        },
        other => bad(other.to_string()),
    })?;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| bad(e.to_string()))?;
        roots.add(certificate).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
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
        let certified =
            CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
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

/// A generated certificate that expires sooner than this is made again at start-up.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Makes a CA and a serving certificate for `names` (DNS names or IP addresses)
/// in `dir`, or reuses the ones a previous run left there, so the CA a user
/// copied into a webhook configuration stays valid across restarts.
///
/// They are reused only when the certificate covers every name in `names`, was
/// signed by the CA beside it and stays valid for at least 30 days; otherwise
/// both are made again (the CA's key is not kept), and the log says why.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<GeneratedCertificate, TlsError> {
    self_signed_at(dir, names, SystemTime::now())
}

fn self_signed_at(
    dir: &Path,
    names: &[String],
    now: SystemTime,
) -> Result<GeneratedCertificate, TlsError> {
    // `--tls-san "a, b"` or an empty `STSGUARD_TLS_SAN` are no reason to fail.
    let names: Vec<String> = names
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .map(String::from)
        .collect();
    let names = names.as_slice();
    let generated = GeneratedCertificate {
        ca: dir.join("ca.crt"),
        files: CertificateFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        },
    };
    let again = "making a new CA and certificate; \
                 clients that trusted the old CA must be given the new one";
    match generated.check(names, now) {
        Ok(()) => return Ok(generated),
        Err(Stale::Absent) => {}
        Err(Stale::MissingNames(missing)) => tracing::info!(
            dir = %dir.display(),
            missing = %missing.join(", "),
            "the generated certificate does not cover every requested name: {again}"
        ),
        Err(reason) => tracing::info!(dir = %dir.display(), %reason, "{again}"),
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
    // A name no client can match (`foo bar`, a trailing dot) would otherwise make
    // every start generate a new CA: refuse it instead.
    let unmatched =
        missing_names(cert.der(), names).map_err(|e| TlsError::Generate(e.to_string()))?;
    if !unmatched.is_empty() {
        let names: Vec<String> = unmatched.iter().map(|name| format!("`{name}`")).collect();
        return Err(TlsError::BadName {
            names: names.join(", "),
        });
    }

    std::fs::create_dir_all(dir).map_err(|cause| TlsError::Write {
        path: dir.to_path_buf(),
        cause,
    })?;
    write_file(&generated.ca, ca_cert.pem().as_bytes(), false)?;
    write_file(&generated.files.key, key.serialize_pem().as_bytes(), true)?;
    write_file(&generated.files.cert, cert.pem().as_bytes(), false)?;
    Ok(generated)
}

/// Why the files a previous run generated are not used again.
#[derive(Debug)]
enum Stale {
    /// There are none: this is the first run with this directory.
    Absent,
    /// They do not load, or the certificate was not signed by the CA.
    Unusable(String),
    /// The certificate does not cover these requested names.
    MissingNames(Vec<String>),
    /// The certificate expires within [`RENEW_BEFORE`].
    Expiring { cert: PathBuf, not_after: UnixTime },
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stale::Absent => f.write_str("there is no certificate yet"),
            Stale::Unusable(why) => f.write_str(why),
            Stale::MissingNames(names) => {
                write!(f, "the certificate does not cover {}", names.join(", "))
            }
            Stale::Expiring { cert, not_after } => write!(
                f,
                "{} expires at {}, within 30 days",
                cert.display(),
                humantime::format_rfc3339_seconds(
                    SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.as_secs())
                )
            ),
        }
    }
}

impl GeneratedCertificate {
    /// Whether these files can serve `names` from `now` on for [`RENEW_BEFORE`] more.
    fn check(&self, names: &[String], now: SystemTime) -> Result<(), Stale> {
        if !self.files.cert.exists() && !self.ca.exists() {
            return Err(Stale::Absent);
        }
        let certified = self
            .files
            .load()
            .map_err(|e| Stale::Unusable(e.to_string()))?;
        let leaf = &certified.cert[0];
        let unparsable = |e: webpki::Error| {
            Stale::Unusable(format!(
                "{} is not a certificate webpki can read: {e}",
                self.files.cert.display()
            ))
        };
        let missing = missing_names(leaf, names).map_err(unparsable)?;
        if !missing.is_empty() {
            return Err(Stale::MissingNames(missing));
        }

        let ca_pem = std::fs::read(&self.ca).map_err(|cause| {
            Stale::Unusable(
                TlsError::Read {
                    path: self.ca.clone(),
                    cause,
                }
                .to_string(),
            )
        })?;
        let ca = CertificateDer::from_pem_slice(&ca_pem).map_err(|e| {
            Stale::Unusable(format!(
                "{} is not a PEM certificate: {e}",
                self.ca.display()
            ))
        })?;
        let anchor = webpki::anchor_from_trusted_cert(&ca).map_err(|e| {
            Stale::Unusable(format!(
                "{} is not a CA certificate: {e}",
                self.ca.display()
            ))
        })?;
        let end_entity = webpki::EndEntityCert::try_from(leaf).map_err(unparsable)?;
        // Verifying the chain at the end of the renewal window checks the
        // certificate's notAfter (which webpki does not otherwise expose).
        let then = now
            .checked_add(RENEW_BEFORE)
            .and_then(|then| then.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or_else(UnixTime::now, UnixTime::since_unix_epoch);
        end_entity
            .verify_for_usage(
                provider().signature_verification_algorithms.all,
                &[anchor],
                &certified.cert[1..],
                then,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map_err(|e| match e {
                webpki::Error::CertExpired { not_after, .. } => Stale::Expiring {
                    cert: self.files.cert.clone(),
                    not_after,
                },
                other => Stale::Unusable(format!(
                    "{} was not signed by {}, or is not valid for 30 more days: {other}",
                    self.files.cert.display(),
                    self.ca.display()
                )),
            })?;
        Ok(())
    }
}

/// The names of `names` that `cert` is not valid for, in order.
///
/// DNS names and IP addresses are checked as a TLS client would check them;
/// a wildcard like `*.example.com`, which is not a name a client asks for, is
/// covered when the certificate lists it.
fn missing_names(
    cert: &CertificateDer<'_>,
    names: &[String],
) -> Result<Vec<String>, webpki::Error> {
    let cert = webpki::EndEntityCert::try_from(cert)?;
    let covers = |name: &str| match ServerName::try_from(name) {
        Ok(name) => cert.verify_is_valid_for_subject_name(&name).is_ok(),
        Err(_) => cert
            .valid_dns_names()
            .any(|listed| listed.eq_ignore_ascii_case(name)),
    };
    Ok(names.iter().filter(|name| !covers(name)).cloned().collect())
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

    #[test]
    fn trust_roots_reads_a_bundle_and_names_the_file_it_could_not() {
        let dir = tempfile::tempdir().unwrap();
        let generated = self_signed(dir.path(), &["127.0.0.1".into()]).unwrap();
        assert_eq!(trust_roots(&generated.ca).unwrap().len(), 1);
        let missing = dir.path().join("missing.crt");
        let error = trust_roots(&missing).unwrap_err().to_string();
        assert!(error.contains("missing.crt"), "{error}");
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = trust_roots(&empty).unwrap_err().to_string();
        assert!(
            error.contains("empty.crt") && error.contains("no PEM certificate"),
            "{error}"
        );
    }

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

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The three files' contents, to tell whether they were written again.
    fn contents(generated: &GeneratedCertificate) -> [Vec<u8>; 3] {
        [
            read(&generated.ca),
            read(&generated.files.cert),
            read(&generated.files.key),
        ]
    }

    fn with(extra: &str) -> Vec<String> {
        let mut names = names();
        names.push(extra.into());
        names
    }

    /// The requested names the certificate in `generated` does not cover.
    fn not_covered(generated: &GeneratedCertificate, names: &[String]) -> Vec<String> {
        let certified = generated.files.load().unwrap();
        missing_names(&certified.cert[0], names).unwrap()
    }

    #[test]
    fn the_same_names_or_fewer_reuse_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed(dir.path(), &names()).unwrap();
        let before = contents(&first);
        let again = self_signed(dir.path(), &names()).unwrap();
        assert!(
            contents(&again) == before,
            "the same names: files rewritten"
        );
        let fewer = self_signed(dir.path(), &["127.0.0.1".to_string()]).unwrap();
        assert!(
            contents(&fewer) == before,
            "a subset of names: files rewritten"
        );
    }

    #[test]
    fn an_added_dns_name_makes_a_new_certificate_that_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed(dir.path(), &names()).unwrap();
        let before = contents(&first);
        let wanted = with("stsguard.default.svc");
        match first.check(&wanted, SystemTime::now()) {
            Err(Stale::MissingNames(missing)) => assert_eq!(missing, ["stsguard.default.svc"]),
            other => panic!("expected the new name to be missing, got {other:?}"),
        }
        let again = self_signed(dir.path(), &wanted).unwrap();
        let after = contents(&again);
        assert!(after[1] != before[1], "the certificate was not made again");
        assert!(after[0] != before[0], "the CA was not made again");
        assert_eq!(not_covered(&again, &wanted), Vec::<String>::new());
        again.check(&wanted, SystemTime::now()).unwrap();
    }

    #[test]
    fn an_added_ip_address_makes_a_new_certificate_that_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed(dir.path(), &names()).unwrap();
        let wanted = with("::1");
        assert_eq!(not_covered(&first, &wanted), ["::1"]);
        let again = self_signed(dir.path(), &wanted).unwrap();
        assert_eq!(not_covered(&again, &wanted), Vec::<String>::new());
        // An address is compared as an address, not as text.
        assert_eq!(
            not_covered(&again, &["0:0:0:0:0:0:0:1".to_string()]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_garbage_certificate_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed(dir.path(), &names()).unwrap();
        std::fs::write(&first.files.cert, "garbage").unwrap();
        let again = self_signed(dir.path(), &names()).unwrap();
        assert!(read(&again.files.cert) != b"garbage");
        assert_eq!(not_covered(&again, &names()), Vec::<String>::new());
    }

    #[test]
    fn a_certificate_from_another_ca_is_made_again() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = self_signed(a.path(), &names()).unwrap();
        let other = self_signed(b.path(), &names()).unwrap();
        std::fs::copy(&other.ca, &first.ca).unwrap();
        let error = first.check(&names(), SystemTime::now()).unwrap_err();
        assert!(
            matches!(error, Stale::Unusable(_)) && error.to_string().contains("was not signed by"),
            "{error}"
        );
        let again = self_signed(a.path(), &names()).unwrap();
        again.check(&names(), SystemTime::now()).unwrap();
    }

    #[test]
    fn a_certificate_that_expires_within_30_days_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed(dir.path(), &names()).unwrap();
        let before = contents(&first);
        // rcgen's certificates are valid until 4096-01-01: look from just before.
        let late = humantime::parse_rfc3339("4095-12-20T00:00:00Z").unwrap();
        let error = first.check(&names(), late).unwrap_err();
        assert!(
            matches!(error, Stale::Expiring { .. })
                && error
                    .to_string()
                    .contains("expires at 4096-01-01T00:00:00Z"),
            "{error}"
        );
        let again = self_signed_at(dir.path(), &names(), late).unwrap();
        assert!(contents(&again)[1] != before[1], "not made again");
    }

    #[test]
    fn a_wildcard_name_is_reused_once_generated() {
        let dir = tempfile::tempdir().unwrap();
        let wanted = with("*.stsguard.svc");
        let first = self_signed(dir.path(), &wanted).unwrap();
        let before = contents(&first);
        let again = self_signed(dir.path(), &wanted).unwrap();
        assert!(
            contents(&again) == before,
            "a wildcard name regenerated every time"
        );
    }

    #[test]
    fn blanks_around_and_between_names_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let spaced = vec![" localhost".to_string(), String::new(), "127.0.0.1 ".into()];
        let first = self_signed(dir.path(), &spaced).unwrap();
        assert_eq!(not_covered(&first, &names()), Vec::<String>::new());
        let before = contents(&first);
        let again = self_signed(dir.path(), &names()).unwrap();
        assert!(
            contents(&again) == before,
            "the same names: files rewritten"
        );
    }

    #[test]
    fn a_name_no_client_could_match_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = self_signed(dir.path(), &with("not a name")).unwrap_err();
        assert!(
            matches!(error, TlsError::BadName { .. })
                && error.to_string().contains("cannot name `not a name`"),
            "{error}"
        );
        assert!(!dir.path().join("tls.crt").exists(), "nothing is written");
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
