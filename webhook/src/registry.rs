//! Policy modules from OCI registries: `module: oci://HOST/REPO:TAG` (or
//! `@sha256:DIGEST`, or both) in a configuration, `stsguard push` and `pull`.
//!
//! A ConfigMap holds at most 1 MiB and image volumes need a recent Kubernetes,
//! while teams already run a registry for their images: so policies travel as
//! OCI artifacts in the CNCF WebAssembly layout ([`artifact`]), through the
//! `oci-client` crate, with the cluster's own `dockerconfigjson` credentials
//! ([`credentials`]).
//!
//! Pulls happen when a policy set loads (start-up and reload, in parallel),
//! never on the admission path. A tag is resolved to a manifest digest there and
//! the set runs that digest until the next load; a digest in the reference must
//! match what the registry serves. Every artifact is cached by digest
//! ([`cache`]): a digest reference already cached never asks the registry, and
//! when the registry is down a tag is served at the digest it last resolved to,
//! with a warning. An artifact whose manifest declares a component over the size
//! limit is refused before its download starts, and a download that runs past
//! the declared size is cut off.
//!
//! With a `verification` section, a pulled module must carry a signature by a
//! trusted key over its manifest digest ([`signatures`], cosign's `.sig` image):
//! checked when it is pulled or loaded from the cache, never on the admission
//! path, and a module that fails is not loaded (a reload keeps the set it had).

pub mod artifact;
mod cache;
pub mod credentials;
pub mod reference;
mod signatures;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};

use self::artifact::{ACCEPTED_MANIFESTS, Artifact, Descriptor};
use self::cache::ArtifactCache;
use self::credentials::{Credential, Credentials};
pub use self::reference::OciReference;
pub use self::signatures::Verification;

/// The size limit of a policy component, unless configured: twice the largest
/// example policy (Python, 19 MB).
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 48 << 20;
/// A manifest is a few hundred bytes; anything near this is not one.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// How registries are reached: the same for every command that pulls.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    pub credentials: Credentials,
    /// PEM certificates trusted beside the system roots.
    pub ca_bundle: Option<PathBuf>,
    /// `HOST[:PORT]`s reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Bounds each registry operation (the pull of one artifact, the push of
    /// one), and each connection attempt.
    pub timeout: Duration,
    pub max_module_bytes: u64,
    /// Where pulled artifacts are kept; `None` pulls every time.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            credentials: Credentials::default(),
            ca_bundle: None,
            insecure: Vec::new(),
            timeout: Duration::from_secs(30),
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            cache_dir: None,
        }
    }
}

/// A policy module pulled (or read from the cache) for one reference.
#[derive(Debug, Clone)]
pub struct PulledModule {
    /// The reference pinned to what ran: `oci://HOST/REPO:TAG@sha256:...`.
    pub resolved: OciReference,
    pub bytes: Arc<[u8]>,
    pub origin: Origin,
    /// Who signed it, when a verification section asked and a signature verified.
    pub signer: Option<crate::signature::Signer>,
}

impl PulledModule {
    /// The manifest digest the reference resolved to.
    pub fn digest(&self) -> &str {
        self.resolved
            .digest
            .as_deref()
            .expect("a pulled module is pinned")
    }
}

/// Where a pulled module's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Registry,
    /// The cache, by the digest the reference names or the registry answered.
    Cache,
    /// The cache, at the digest the tag last resolved to: the registry could
    /// not be asked.
    CacheRegistryDown,
}

/// The modules a configuration's `oci://` policies resolved to, by reference.
#[derive(Debug, Clone, Default)]
pub struct Pulled(BTreeMap<OciReference, PulledModule>);

impl Pulled {
    pub fn get(&self, reference: &OciReference) -> Option<&PulledModule> {
        self.0.get(reference)
    }
}

/// Why a reference could not be pulled or pushed: names the reference, and the
/// registry's answer or what was tried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reference}: {message}")]
pub struct RegistryError {
    pub reference: String,
    pub message: String,
}

impl RegistryError {
    /// Makes the errors of an operation on `reference`.
    fn about(reference: &OciReference) -> impl Fn(String) -> Self + Copy + '_ {
        move |message| Self {
            reference: reference.to_string(),
            message,
        }
    }
}

/// A registry client with stsguard's rules: size limit, timeouts, cache.
#[derive(Clone)]
pub struct Registry {
    client: Arc<Client>,
    options: Arc<RegistryOptions>,
    cache: Option<ArtifactCache>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("options", &self.options)
            .finish()
    }
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Result<Self, String> {
        let extra_root_certificates = match &options.ca_bundle {
            Some(path) => read_ca_bundle(path)?,
            None => Vec::new(),
        };
        let protocol = if options.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(options.insecure.clone())
        };
        let client = Client::new(ClientConfig {
            protocol,
            extra_root_certificates,
            // An index is named for what it is (artifact.rs), not resolved to a
            // platform's image.
            platform_resolver: None,
            connect_timeout: Some(options.timeout.min(Duration::from_secs(10))),
            read_timeout: Some(options.timeout),
            user_agent: concat!("stsguard/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        });
        Ok(Self {
            client: Arc::new(client),
            cache: options.cache_dir.as_deref().map(ArtifactCache::new),
            options: Arc::new(options),
        })
    }

    /// Pulls every reference (a config's distinct `oci://` modules), in
    /// parallel, each checked against `verification` when there is one.
    pub async fn pull_all<'a>(
        &self,
        references: impl IntoIterator<Item = &'a OciReference>,
        verification: Option<&Verification>,
    ) -> Result<Pulled, RegistryError> {
        let pulls = references.into_iter().map(|reference| async move {
            let mut pulled = self.pull(reference).await?;
            if let Some(verification) = verification {
                pulled.signer = self
                    .verified_signer(reference, pulled.digest(), verification)
                    .await?;
            }
            Ok::<_, RegistryError>((reference.clone(), pulled))
        });
        let pulled = futures_util::future::try_join_all(pulls).await?;
        Ok(Pulled(pulled.into_iter().collect()))
    }

    /// Pulls one artifact's component: from the cache when the reference names
    /// a digest already there, else from the registry (and into the cache).
    pub async fn pull(&self, reference: &OciReference) -> Result<PulledModule, RegistryError> {
        let error = RegistryError::about(reference);
        if let Some(digest) = &reference.digest
            && let Some(bytes) = self.cached(digest)
        {
            return Ok(PulledModule {
                resolved: reference.clone(),
                bytes,
                origin: Origin::Cache,
                signer: None,
            });
        }
        let started = Instant::now();
        let credential = self.credential(reference).map_err(error)?;
        let pulled = tokio::time::timeout(
            self.options.timeout,
            self.pull_from_registry(reference, &credential),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Unreachable(format!(
                "no complete answer from {} within {} (--registry-timeout)",
                reference.registry,
                humantime::format_duration(self.options.timeout)
            )))
        });
        match pulled {
            Ok(pulled) => {
                tracing::info!(
                    reference = %reference,
                    digest = pulled.digest(),
                    bytes = pulled.bytes.len(),
                    origin = ?pulled.origin,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "policy module pulled"
                );
                Ok(pulled)
            }
            Err(Failure::Unreachable(message)) => match self.last_resolution(reference) {
                Some(pulled) => {
                    tracing::warn!(
                        reference = %reference,
                        digest = pulled.digest(),
                        reason = %message,
                        "the registry could not be asked; serving the digest this tag last resolved to, from the cache"
                    );
                    Ok(pulled)
                }
                None => Err(error(format!(
                    "{message}; it was never pulled before, so there is no cached copy to serve"
                ))),
            },
            Err(Failure::Refused(message)) => Err(error(message)),
        }
    }

    /// The manifest digest `reference`'s tag points to now (a HEAD request).
    pub async fn resolve_tag(&self, reference: &OciReference) -> Result<String, RegistryError> {
        let error = RegistryError::about(reference);
        let tagged = reference
            .tag_only()
            .ok_or_else(|| error("it has no tag".into()))?;
        let credential = self.credential(reference).map_err(error)?;
        let client_reference = tagged.to_client();
        let resolved = tokio::time::timeout(
            self.options.timeout,
            self.client
                .fetch_manifest_digest(&client_reference, &credential.auth),
        )
        .await;
        match resolved {
            Ok(Ok(digest)) => Ok(digest),
            Ok(Err(cause)) => Err(error(explain(&cause, reference, &credential).message())),
            Err(_) => Err(error(format!(
                "no answer from {} within {}",
                reference.registry,
                humantime::format_duration(self.options.timeout)
            ))),
        }
    }

    /// Pushes `component` as a WebAssembly artifact to `reference` (its tag;
    /// a digest in it must be the artifact's). Returns the manifest digest.
    pub async fn push(
        &self,
        component: &[u8],
        anatomy: &crate::engine::anatomy::Anatomy,
        reference: &OciReference,
    ) -> Result<String, RegistryError> {
        let error = RegistryError::about(reference);
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let artifact = Artifact::new(component, anatomy, &created);
        if let Some(digest) = &reference.digest
            && *digest != artifact.digest
        {
            return Err(error(format!(
                "a pushed artifact is addressed by its own digest, {}; drop `@{digest}` \
                 and push to a tag",
                artifact.digest
            )));
        }
        let tagged = reference
            .tag_only()
            .ok_or_else(|| error("give a tag to push to (oci://HOST/REPOSITORY:TAG)".into()))?;
        let credential = self.credential(reference).map_err(error)?;
        let client_reference = tagged.to_client();
        let pushed = tokio::time::timeout(self.options.timeout, async {
            self.client
                .auth(&client_reference, &credential.auth, RegistryOperation::Push)
                .await?;
            self.client
                .push_blob(
                    &client_reference,
                    component.to_vec(),
                    &artifact.layer_descriptor.digest,
                )
                .await?;
            self.client
                .push_blob(
                    &client_reference,
                    artifact.config.clone(),
                    &artifact.config_descriptor.digest,
                )
                .await?;
            self.client
                .push_manifest_raw(
                    &client_reference,
                    artifact.manifest.clone(),
                    artifact::MANIFEST_MEDIA_TYPE
                        .parse()
                        .expect("a media type is a header value"),
                )
                .await
        })
        .await;
        match pushed {
            Ok(Ok(_url)) => Ok(artifact.digest),
            Ok(Err(cause)) => Err(error(explain(&cause, reference, &credential).message())),
            Err(_) => Err(error(format!(
                "the push did not finish within {} (--registry-timeout)",
                humantime::format_duration(self.options.timeout)
            ))),
        }
    }

    fn credential(&self, reference: &OciReference) -> Result<Credential, String> {
        self.options.credentials.for_registry(&reference.registry)
    }

    /// A cached component, by manifest digest.
    fn cached(&self, manifest_digest: &str) -> Option<Arc<[u8]>> {
        let cache = self.cache.as_ref()?;
        let manifest = cache.manifest(manifest_digest)?;
        let layer = artifact::component_layer(&manifest).ok()?;
        cache.blob(&layer.digest).map(Arc::from)
    }

    /// The tag's last resolution, served from the cache.
    fn last_resolution(&self, reference: &OciReference) -> Option<PulledModule> {
        if reference.digest.is_some() {
            return None;
        }
        let digest = self.cache.as_ref()?.tag(reference)?;
        let bytes = self.cached(&digest)?;
        Some(PulledModule {
            resolved: reference.pinned(&digest),
            bytes,
            origin: Origin::CacheRegistryDown,
            signer: None,
        })
    }

    async fn pull_from_registry(
        &self,
        reference: &OciReference,
        credential: &Credential,
    ) -> Result<PulledModule, Failure> {
        let client_reference = reference.to_client();
        let explained = |cause: OciDistributionError| explain(&cause, reference, credential);
        let (manifest, digest) = self
            .client
            .pull_manifest_raw(&client_reference, &credential.auth, &ACCEPTED_MANIFESTS)
            .await
            .map_err(explained)?;
        if manifest.len() > MAX_MANIFEST_BYTES {
            return Err(Failure::Refused(format!(
                "its manifest is {} bytes, which is not a manifest",
                manifest.len()
            )));
        }
        let computed = artifact::sha256(&manifest);
        if let Some(wanted) = &reference.digest
            && computed != *wanted
        {
            return Err(Failure::Refused(digest_mismatch(wanted, &computed)));
        }
        if digest != computed {
            return Err(Failure::Refused(format!(
                "the registry says its manifest is {digest}, but the manifest it sent is {computed}"
            )));
        }
        let layer = artifact::component_layer(&manifest).map_err(Failure::Refused)?;
        let resolved = reference.pinned(&computed);
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.blob(&layer.digest));
        let (bytes, origin) = match cached {
            Some(bytes) => (bytes, Origin::Cache),
            None => (
                self.download(&client_reference, &layer, reference, credential)
                    .await?,
                Origin::Registry,
            ),
        };
        if let Some(cache) = &self.cache {
            let stored = cache
                .store_blob(&layer.digest, &bytes)
                .and_then(|()| cache.store_manifest(&computed, &manifest))
                .and_then(|()| cache.store_tag(reference, &computed));
            if let Err(error) = stored {
                tracing::warn!(reference = %reference, %error, "could not cache a pulled policy module; it is served, but a restart needs the registry");
            }
        }
        Ok(PulledModule {
            resolved,
            bytes: bytes.into(),
            origin,
            signer: None,
        })
    }

    /// The component layer, bounded by the size limit and the size the manifest
    /// declares, checked against its digest.
    async fn download(
        &self,
        client_reference: &oci_client::Reference,
        layer: &Descriptor,
        reference: &OciReference,
        credential: &Credential,
    ) -> Result<Vec<u8>, Failure> {
        let limit = self.options.max_module_bytes;
        if layer.size > limit {
            return Err(Failure::Refused(too_large(layer.size, limit)));
        }
        let descriptor = OciDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.size as i64,
            ..OciDescriptor::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(client_reference, &descriptor)
            .await
            .map_err(|cause| explain(&cause, reference, credential))?;
        let mut bytes = Vec::with_capacity(layer.size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|cause| {
                Failure::Unreachable(format!(
                    "the download of {} broke off: {cause}",
                    layer.digest
                ))
            })?;
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > layer.size {
                return Err(Failure::Refused(format!(
                    "the registry sent more than the {} bytes its manifest declares for {}",
                    layer.size, layer.digest
                )));
            }
        }
        let computed = artifact::sha256(&bytes);
        if computed != layer.digest {
            return Err(Failure::Refused(format!(
                "the component the registry sent is {computed}, not {} as its manifest says",
                layer.digest
            )));
        }
        Ok(bytes)
    }
}

/// How a pull failed: the registry could not be asked (a cached resolution may
/// stand in), or it answered and the answer is final.
#[derive(Debug)]
enum Failure {
    Unreachable(String),
    Refused(String),
}

impl Failure {
    fn message(self) -> String {
        match self {
            Self::Unreachable(message) | Self::Refused(message) => message,
        }
    }
}

fn digest_mismatch(wanted: &str, got: &str) -> String {
    format!(
        "digest mismatch: the reference pins {wanted}, but the registry serves {got} \
         for it; the artifact was changed or the reference is wrong, and is not run"
    )
}

fn too_large(size: u64, limit: u64) -> String {
    format!(
        "its component is {size} bytes, over the limit of {limit} bytes \
         (--max-module-size); refused before downloading it"
    )
}

/// The registry's answer, in words that say what to do.
fn explain(
    cause: &OciDistributionError,
    reference: &OciReference,
    credential: &Credential,
) -> Failure {
    let registry = &reference.registry;
    let what = match (&reference.tag, &reference.digest) {
        (_, Some(digest)) => format!("manifest {digest}"),
        (Some(tag), None) => format!("tag `{tag}`"),
        (None, None) => "artifact".into(),
    };
    let unauthorized = || {
        Failure::Refused(match credential.auth {
            RegistryAuth::Anonymous => format!(
                "{registry} answered 401 Unauthorized: it needs credentials, and the pull was \
                 {}; give a Docker config.json with an `auths` entry for {registry} \
                 (--registry-auth)",
                credential.described
            ),
            _ => format!(
                "{registry} answered 401 Unauthorized to {}: the user or password is wrong, \
                 or has no access to {}",
                credential.described, reference.repository
            ),
        })
    };
    match cause {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let messages = envelope
                .errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            if codes.contains(&&OciErrorCode::Unauthorized) {
                unauthorized()
            } else if codes.contains(&&OciErrorCode::Denied) {
                Failure::Refused(format!(
                    "{registry} denied access to {} for {}: {messages}",
                    reference.repository, credential.described
                ))
            } else if codes.iter().any(|code| {
                matches!(
                    code,
                    OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
                )
            }) {
                Failure::Refused(format!(
                    "{registry} has no {what} in repository {} ({messages})",
                    reference.repository
                ))
            } else {
                Failure::Refused(format!("{registry} refused the request: {messages}"))
            }
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let message = message.trim();
            match code {
                401 => unauthorized(),
                404 => Failure::Refused(format!(
                    "{registry} has no {what} in repository {} (404 {message})",
                    reference.repository
                )),
                // Overloaded, restarting, behind a failing proxy: worth a cached copy.
                500..=599 => Failure::Unreachable(format!("{registry} answered {code}: {message}")),
                _ => Failure::Refused(format!("{registry} answered {code}: {message}")),
            }
        }
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual })
            if reference.digest.as_ref() == Some(expected) =>
        {
            Failure::Refused(digest_mismatch(expected, actual))
        }
        OciDistributionError::DigestError(cause) => Failure::Refused(format!(
            "the registry's answer fails its digest check: {cause}"
        )),
        OciDistributionError::RequestError(cause) => {
            let chain = crate::errors::describe_error(cause);
            let hint = if chain.contains("certificate") || chain.contains("UnknownIssuer") {
                "; if the registry's certificate is signed by a private CA, give its PEM \
                 with --registry-ca"
            } else if chain.contains("InvalidContentType") || chain.contains("wrong version number")
            {
                "; if it serves plain HTTP, list it with --insecure-registry"
            } else {
                ""
            };
            Failure::Unreachable(format!("could not reach {registry}: {chain}{hint}"))
        }
        other => Failure::Refused(format!("{registry}: {other}")),
    }
}

/// The certificates of a PEM bundle, each given to the client on its own (a
/// bundle read as one certificate would keep only the first).
fn read_ca_bundle(path: &std::path::Path) -> Result<Vec<Certificate>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("--registry-ca {}: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "--registry-ca {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certificates
        .into_iter()
        .map(|certificate| Certificate {
            encoding: CertificateEncoding::Der,
            data: certificate.to_vec(),
        })
        .collect())
}
