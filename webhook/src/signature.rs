//! Signatures of policy modules, in cosign's formats, so that a cluster runs only
//! the modules its owners signed — and so that `cosign` and stsguard read each
//! other's signatures.
//!
//! ```text
//!   sign:   manifest digest ──► payload (cosign "simple signing" JSON) ──► ECDSA P-256 (SHA-256)
//!           ──► a layer of the `sha256-<hex>.sig` image in the module's repository
//!           (appended: earlier signatures stay)        [registry.rs pushes it]
//!   verify: the `.sig` image's layers ──► for each: the signature over the payload's
//!           exact bytes with a trusted key, the payload's digest = the module's,
//!           the required annotations ──► the first that passes names the signer
//!   files:  `FILE.sig` beside a module file: the base64 signature of its bytes,
//!           as `cosign sign-blob --key` writes it
//! ```
//!
//! Keys: a public key is a PEM `PUBLIC KEY` (ECDSA P-256, as `cosign
//! generate-key-pair` writes it); a private key is cosign's encrypted PEM
//! (`ENCRYPTED SIGSTORE PRIVATE KEY`, or the older `ENCRYPTED COSIGN PRIVATE KEY`;
//! the password from `COSIGN_PASSWORD`) or a plain PKCS#8 `PRIVATE KEY` (`openssl
//! genpkey`). Cryptography is ring's (the TLS provider already linked) and
//! RustCrypto's scrypt and secretbox for cosign's key encryption; the formats are
//! written here, checked byte for byte against cosign's (see the tests).
//!
//! Nothing here does I/O or talks to a registry: signatures are checked when a
//! module is pulled or loaded, never on the admission path.

mod keys;
mod payload;

pub use keys::{PublicKey, SigningKey};
pub use payload::{Payload, build_payload};

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// The media type of a `.sig` layer: the signed payload.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation that holds the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// Why a key or a signature could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignatureError(pub String);

/// One signature as stored: the payload's exact bytes and the base64 signature
/// over them (a `.sig` layer, or a detached blob signature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Base64 of the payload's bytes (JSON keeps them as they were signed).
    pub payload: String,
    pub signature: String,
}

impl Signature {
    pub fn new(payload: &[u8], signature: &str) -> Self {
        Self {
            payload: BASE64.encode(payload),
            signature: signature.trim().to_string(),
        }
    }

    fn payload_bytes(&self) -> Option<Vec<u8>> {
        BASE64.decode(&self.payload).ok()
    }
}

/// Who signed what was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signer {
    /// `sha256:<hex>` of the key's SubjectPublicKeyInfo.
    pub key: String,
    /// The signature's annotations (`cosign sign -a key=value`).
    pub annotations: BTreeMap<String, String>,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {}", self.key)?;
        for (key, value) in &self.annotations {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

/// What a module's signature must satisfy: a trusted key, and these annotations.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    keys: Vec<PublicKey>,
    annotations: BTreeMap<String, String>,
}

impl Verifier {
    pub fn new(keys: Vec<PublicKey>, annotations: BTreeMap<String, String>) -> Self {
        Self { keys, annotations }
    }

    /// The trusted keys' fingerprints, for messages.
    pub fn keys(&self) -> String {
        self.keys
            .iter()
            .map(|k| k.fingerprint().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What is expected, for messages: `a signature by key sha256:... (with team=platform)`.
    pub fn expected(&self) -> String {
        let mut text = format!("a signature by key {}", self.keys());
        if !self.annotations.is_empty() {
            let wanted: Vec<String> = self
                .annotations
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            text.push_str(&format!(" with {}", wanted.join(", ")));
        }
        text
    }

    /// The first of `signatures` that a trusted key made over a payload for
    /// `digest` with the required annotations; else why none did, one reason
    /// per signature.
    pub fn verify(&self, digest: &str, signatures: &[Signature]) -> Result<Signer, String> {
        if signatures.is_empty() {
            return Err("it is not signed".into());
        }
        let mut reasons = Vec::new();
        for signature in signatures {
            match self.check(digest, signature) {
                Ok(signer) => return Ok(signer),
                Err(reason) => reasons.push(reason),
            }
        }
        reasons.dedup();
        Err(format!(
            "none of its {} signature(s) is {}: {}",
            signatures.len(),
            self.expected(),
            reasons.join("; ")
        ))
    }

    fn check(&self, digest: &str, signature: &Signature) -> Result<Signer, String> {
        let payload = signature
            .payload_bytes()
            .ok_or("a payload that is not base64")?;
        let der = BASE64
            .decode(signature.signature.trim())
            .map_err(|_| "a signature that is not base64".to_string())?;
        let key = self
            .keys
            .iter()
            .find(|key| key.verify(&payload, &der))
            .ok_or("one made by another key (or over other bytes)")?;
        let parsed = Payload::parse(&payload).map_err(|e| format!("a payload that {e}"))?;
        if parsed.digest() != digest {
            return Err(format!(
                "one by a trusted key that covers {}, not this module",
                parsed.digest()
            ));
        }
        let annotations = parsed.annotations();
        for (name, value) in &self.annotations {
            if annotations.get(name) != Some(value) {
                return Err(format!(
                    "one by a trusted key without the annotation {name}={value}"
                ));
            }
        }
        Ok(Signer {
            key: key.fingerprint().to_string(),
            annotations,
        })
    }

    /// A detached signature of a file's bytes (`cosign sign-blob --key`): base64
    /// DER over the bytes themselves. It carries no annotations, so a verifier
    /// that requires annotations refuses it.
    pub fn verify_blob(&self, bytes: &[u8], signature: &str) -> Result<Signer, String> {
        let der = BASE64
            .decode(signature.trim())
            .map_err(|_| "its signature is not base64".to_string())?;
        let key = self
            .keys
            .iter()
            .find(|key| key.verify(bytes, &der))
            .ok_or_else(|| format!("its signature is not {}", self.expected()))?;
        if !self.annotations.is_empty() {
            return Err(format!(
                "a file's signature carries no annotations, and {} are required",
                self.expected()
            ));
        }
        Ok(Signer {
            key: key.fingerprint().to_string(),
            annotations: BTreeMap::new(),
        })
    }
}

/// Where a module file's detached signature is: `FILE.sig` beside it.
pub fn file_signature_path(file: &std::path::Path) -> std::path::PathBuf {
    let mut path = file.as_os_str().to_owned();
    path.push(".sig");
    path.into()
}

/// `sha256:<hex>` → `sha256-<hex>.sig`: the tag cosign keeps an artifact's
/// signatures under, in its repository.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// The config blob of a `.sig` image with these layers, as cosign writes it
/// (go-containerregistry's `mutate.Append` on an empty image: a history entry
/// and a diff_id per layer; 233 bytes for one layer).
pub fn signature_config(layer_digests: &[String]) -> Vec<u8> {
    let history = vec![r#"{"created":"0001-01-01T00:00:00Z"}"#; layer_digests.len()].join(",");
    let diff_ids = layer_digests
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{history}],"os":"","rootfs":{{"type":"layers","diff_ids":[{diff_ids}]}},"config":{{}}}}"#
    )
    .into_bytes()
}

#[cfg(test)]
mod tests;
