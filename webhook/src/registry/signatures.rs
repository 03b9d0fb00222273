//! Signatures of artifacts where cosign keeps them: the image tagged
//! `sha256-<hex>.sig` in the artifact's repository, one layer per signature
//! (the payload, with the signature in an annotation). Reading them for
//! verification when a module is pulled, and appending one for `stsguard sign`.

use std::collections::BTreeMap;

use oci_client::RegistryOperation;
use serde::{Deserialize, Serialize};

use super::artifact::{self, Descriptor};
use super::credentials::Credential;
use super::{Failure, OciReference, Registry, RegistryError, explain};
use crate::signature::{
    self, PublicKey, SIGNATURE_ANNOTATION, SIMPLE_SIGNING_MEDIA_TYPE, Signature, Signer, Verifier,
};

/// The manifest types a `.sig` image comes as (cosign writes OCI; with
/// `COSIGN_DOCKER_MEDIA_TYPES=1`, Docker's).
const SIGNATURE_MANIFESTS: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// A payload is a few hundred bytes; the layers cosign caps an image at.
const MAX_PAYLOAD_BYTES: u64 = 64 << 10;
const MAX_SIGNATURES: usize = 1000;

/// What modules pulled from registries must satisfy.
#[derive(Debug, Clone)]
pub struct Verification {
    pub verifier: Verifier,
    /// A module without a signature that verifies is refused; else it is
    /// served, unsigned, with a warning.
    pub required: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct SignatureManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    config: Descriptor,
    layers: Vec<SignatureLayer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignatureLayer {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

impl Registry {
    /// The `.sig` tag of the artifact `digest` in `reference`'s repository.
    fn signature_reference(reference: &OciReference, digest: &str) -> OciReference {
        OciReference {
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            tag: Some(signature::signature_tag(digest)),
            digest: None,
        }
    }

    /// The signature image's manifest and its signatures (payloads with their
    /// signatures); `None` when the artifact has no `.sig` image.
    async fn fetch_signatures(
        &self,
        reference: &OciReference,
        digest: &str,
        credential: &Credential,
    ) -> Result<Option<(SignatureManifest, Vec<Signature>)>, Failure> {
        let sig = Self::signature_reference(reference, digest);
        let client_reference = sig.to_client();
        let manifest = match self
            .client
            .pull_manifest_raw(&client_reference, &credential.auth, &SIGNATURE_MANIFESTS)
            .await
        {
            Ok((manifest, _)) => manifest,
            Err(cause) => {
                return match explain(&cause, &sig, credential) {
                    // No such tag: not signed.
                    Failure::Refused(message) if message.contains("has no tag") => Ok(None),
                    other => Err(other),
                };
            }
        };
        let manifest: SignatureManifest = serde_json::from_slice(&manifest).map_err(|e| {
            Failure::Refused(format!("{sig} is not a signature image cosign writes: {e}"))
        })?;
        let mut signatures = Vec::new();
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == SIMPLE_SIGNING_MEDIA_TYPE)
            .take(MAX_SIGNATURES)
        {
            let Some(value) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
                continue;
            };
            if layer.size > MAX_PAYLOAD_BYTES {
                continue;
            }
            let descriptor = Descriptor {
                media_type: layer.media_type.clone(),
                digest: layer.digest.clone(),
                size: layer.size,
            };
            let payload = self
                .download(&client_reference, &descriptor, &sig, credential)
                .await?;
            signatures.push(Signature::new(&payload, value));
        }
        Ok(Some((manifest, signatures)))
    }

    /// The signatures of the artifact `digest`, from the registry (and into the
    /// cache); an empty list when it has none.
    pub async fn signatures(
        &self,
        reference: &OciReference,
        digest: &str,
    ) -> Result<Vec<Signature>, RegistryError> {
        let error = RegistryError::about(reference);
        let credential = self.credential(reference).map_err(error)?;
        let fetched = tokio::time::timeout(
            self.options.timeout,
            self.fetch_signatures(reference, digest, &credential),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Unreachable(format!(
                "no complete answer from {} within the registry timeout",
                reference.registry
            )))
        })
        .map_err(|failure| error(failure.message()))?;
        let signatures = fetched.map(|(_, s)| s).unwrap_or_default();
        if let Some(cache) = &self.cache
            && let Err(cause) = cache.store_signatures(digest, &signatures)
        {
            tracing::warn!(reference = %reference, error = %cause, "could not cache an artifact's signatures");
        }
        Ok(signatures)
    }

    /// Who signed the pulled artifact `digest`, as `verification` requires:
    /// the cached signatures first (a start with the registry down can use what
    /// was fetched before), then the registry's. `Ok(None)`: unsigned, and
    /// signatures are not required.
    pub(super) async fn verified_signer(
        &self,
        reference: &OciReference,
        digest: &str,
        verification: &Verification,
    ) -> Result<Option<Signer>, RegistryError> {
        let verifier = &verification.verifier;
        if let Some(cached) = self.cache.as_ref().and_then(|c| c.signatures(digest))
            && let Ok(signer) = verifier.verify(digest, &cached)
        {
            return Ok(Some(signer));
        }
        let why = match self.signatures(reference, digest).await {
            Ok(signatures) => match verifier.verify(digest, &signatures) {
                Ok(signer) => return Ok(Some(signer)),
                Err(why) => why,
            },
            Err(error) => format!(
                "its signatures could not be read ({}), and none verified before is cached",
                error.message
            ),
        };
        let pinned = reference.pinned(digest);
        if verification.required {
            Err(RegistryError {
                reference: pinned.to_string(),
                message: format!(
                    "refused: modules must be signed (verification.required), and {why}; expected \
                     {} over digest {digest} (sign it with `stsguard sign {pinned} --key KEY`)",
                    verifier.expected()
                ),
            })
        } else {
            tracing::warn!(reference = %pinned, reason = %why, "policy module not signed as the verification section asks; served anyway (verification.required is false)");
            Ok(None)
        }
    }

    /// The manifest digest `reference` names: its digest, once the registry
    /// confirms it has that manifest, or where its tag points now. What `stsguard
    /// sign` signs, so that a signature never covers a manifest nobody pushed.
    pub async fn manifest_digest(&self, reference: &OciReference) -> Result<String, RegistryError> {
        let Some(digest) = &reference.digest else {
            return self.resolve_tag(reference).await;
        };
        let error = RegistryError::about(reference);
        let credential = self.credential(reference).map_err(error)?;
        let by_digest = OciReference {
            tag: None,
            ..reference.clone()
        };
        let found = tokio::time::timeout(
            self.options.timeout,
            self.client
                .fetch_manifest_digest(&by_digest.to_client(), &credential.auth),
        )
        .await
        .map_err(|_| {
            error(format!(
                "no answer from {} within the registry timeout",
                reference.registry
            ))
        })?
        .map_err(|cause| error(explain(&cause, &by_digest, &credential).message()))?;
        if &found != digest {
            return Err(error(format!(
                "the registry answers {found} for the manifest {digest}"
            )));
        }
        Ok(found)
    }

    /// Appends a signature to the artifact `digest`'s `.sig` image, as `cosign
    /// sign` does: earlier signatures stay; one with the same payload that
    /// already verifies with `key` makes this a no-op (`Ok(false)`).
    pub async fn push_signature(
        &self,
        reference: &OciReference,
        digest: &str,
        payload: &[u8],
        signature: &str,
        key: &PublicKey,
    ) -> Result<bool, RegistryError> {
        let sig = Self::signature_reference(reference, digest);
        let error = RegistryError::about(reference);
        let credential = self.credential(reference).map_err(error)?;
        let pushed = tokio::time::timeout(self.options.timeout, async {
            let existing = self
                .fetch_signatures(reference, digest, &credential)
                .await?;
            let mut layers = match &existing {
                Some((manifest, _)) => manifest.layers.clone(),
                None => Vec::new(),
            };
            let payload_digest = artifact::sha256(payload);
            let already = existing.iter().flat_map(|(_, s)| s).any(|s| {
                s.payload == Signature::new(payload, "").payload
                    && Verifier::new(vec![key.clone()], BTreeMap::new())
                        .verify(digest, std::slice::from_ref(s))
                        .is_ok()
            });
            if already {
                return Ok(false);
            }
            if layers.len() >= MAX_SIGNATURES {
                return Err(Failure::Refused(format!(
                    "{sig} holds {MAX_SIGNATURES} signatures already"
                )));
            }
            layers.push(SignatureLayer {
                media_type: SIMPLE_SIGNING_MEDIA_TYPE.into(),
                digest: payload_digest.clone(),
                size: payload.len() as u64,
                annotations: BTreeMap::from([(SIGNATURE_ANNOTATION.into(), signature.into())]),
            });
            let digests: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
            let config = signature::signature_config(&digests);
            let manifest = SignatureManifest {
                schema_version: 2,
                media_type: Some(SIGNATURE_MANIFESTS[0].into()),
                config: Descriptor {
                    media_type: "application/vnd.oci.image.config.v1+json".into(),
                    digest: artifact::sha256(&config),
                    size: config.len() as u64,
                },
                layers,
            };
            let client_reference = sig.to_client();
            let failed = |cause| explain(&cause, &sig, &credential);
            self.client
                .auth(&client_reference, &credential.auth, RegistryOperation::Push)
                .await
                .map_err(failed)?;
            self.client
                .push_blob(&client_reference, payload.to_vec(), &payload_digest)
                .await
                .map_err(failed)?;
            self.client
                .push_blob(&client_reference, config, &manifest.config.digest)
                .await
                .map_err(failed)?;
            let body = serde_json::to_vec(&manifest).expect("a manifest serializes");
            self.client
                .push_manifest_raw(
                    &client_reference,
                    body,
                    SIGNATURE_MANIFESTS[0]
                        .parse()
                        .expect("a media type is a header value"),
                )
                .await
                .map_err(failed)?;
            Ok(true)
        })
        .await;
        match pushed {
            Ok(Ok(pushed)) => Ok(pushed),
            Ok(Err(failure)) => Err(RegistryError::about(reference)(failure.message())),
            Err(_) => Err(RegistryError::about(reference)(
                "the signature's push did not finish within the registry timeout".into(),
            )),
        }
    }
}
