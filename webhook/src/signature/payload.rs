//! The payload a signature covers: cosign's "simple signing" JSON, which names
//! the artifact by repository and manifest digest.
//!
//! ```json
//! {"critical":{"identity":{"docker-reference":"HOST/REPO"},"image":{"docker-manifest-digest":"sha256:..."},"type":"cosign container image signature"},"optional":null}
//! ```
//!
//! Built byte for byte as cosign builds it (Go's `json.Marshal`: compact, these
//! field orders, `optional` with sorted keys or `null`, `<`, `>`, `&` escaped),
//! and read back without re-serializing: a signature covers the exact bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `critical.type` of a cosign signature payload.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SimpleSigning {
    critical: Critical,
    optional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// The payload cosign signs for the manifest `digest` in `repository`
/// (`HOST/REPO`, no tag), with `annotations` (`-a key=value`).
pub fn build_payload(
    repository: &str,
    digest: &str,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let optional = (!annotations.is_empty()).then(|| {
        annotations
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect()
    });
    let payload = SimpleSigning {
        critical: Critical {
            identity: Identity {
                docker_reference: repository.to_string(),
            },
            image: Image {
                docker_manifest_digest: digest.to_string(),
            },
            kind: SIGNATURE_TYPE.to_string(),
        },
        optional,
    };
    let json = serde_json::to_string(&payload).expect("a payload serializes");
    // Go's encoding/json escapes these (only strings can hold them).
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
        .into_bytes()
}

/// A signature's payload, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload(SimpleSigning);

impl Payload {
    /// Reads a payload; an error says what it is not.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let payload: SimpleSigning = serde_json::from_slice(bytes)
            .map_err(|e| format!("is not a cosign signature payload: {e}"))?;
        if payload.critical.kind != SIGNATURE_TYPE {
            return Err(format!(
                "is of type `{}`, not `{SIGNATURE_TYPE}`",
                payload.critical.kind
            ));
        }
        Ok(Self(payload))
    }

    /// The manifest digest it covers.
    pub fn digest(&self) -> &str {
        &self.0.critical.image.docker_manifest_digest
    }

    /// The repository it names (`docker-reference`; not checked, as cosign does not).
    pub fn repository(&self) -> &str {
        &self.0.critical.identity.docker_reference
    }

    /// Its annotations, the string-valued ones.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        self.0
            .optional
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect()
    }
}
