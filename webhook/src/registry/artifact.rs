//! The CNCF layout of WebAssembly in OCI registries (TAG Runtime's "Wasm OCI
//! Artifact layout"): an OCI image manifest whose config has the media type
//! `application/vnd.wasm.config.v0+json` and whose one layer is the component,
//! `application/wasm`. Tools that read that layout (wkg, wasmtime's and
//! Spin's pullers, oci-wasm) read what `stsguard push` writes, and the other way
//! round.
//!
//! Built here from the component's own sections ([`Anatomy`]) rather than with
//! the `oci-wasm` crate: that crate pins an older `oci-client` and brings a
//! second copy of the wasm parsing crates, for a config of a few fields.
//!
//! Pulled manifests are classified here too, so that a container image, an
//! image index or a Kubewarden policy pushed by mistake is named for what it is.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::anatomy::Anatomy;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const LAYER_MEDIA_TYPE: &str = "application/wasm";

/// The manifest types a registry may answer with when asked for a reference:
/// all are accepted so that the wrong ones can be named.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [
    MANIFEST_MEDIA_TYPE,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    fn of(media_type: &str, bytes: &[u8]) -> Self {
        Self {
            media_type: media_type.into(),
            digest: sha256(bytes),
            size: bytes.len() as u64,
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::engine::hex(&Sha256::digest(bytes)))
}

/// The parts of a manifest stsguard reads.
#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    /// Present on an index (a multi-platform image).
    #[serde(default)]
    manifests: Option<Vec<serde_json::Value>>,
}

/// An artifact ready to push: the config and manifest bytes and their
/// descriptors, the layer being the component as given.
#[derive(Debug)]
pub struct Artifact {
    pub config: Vec<u8>,
    pub config_descriptor: Descriptor,
    pub layer_descriptor: Descriptor,
    pub manifest: Vec<u8>,
    /// The manifest's digest: what a reference to the pushed artifact pins.
    pub digest: String,
}

impl Artifact {
    /// Lays out `component`, read as `anatomy`. `created` is an RFC 3339 time.
    pub fn new(component: &[u8], anatomy: &Anatomy, created: &str) -> Self {
        let layer_descriptor = Descriptor::of(LAYER_MEDIA_TYPE, component);
        let config = serde_json::to_vec(&serde_json::json!({
            "created": created,
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer_descriptor.digest],
            "component": {
                "exports": anatomy.exports(),
                "imports": anatomy.imports(),
                // The world it was built for: `stsguard:policy/policy@0.2.0`.
                "target": anatomy
                    .contract_version()
                    .map(|version| format!("stsguard:policy/policy@{version}")),
            },
        }))
        .expect("a JSON value serializes");
        let config_descriptor = Descriptor::of(CONFIG_MEDIA_TYPE, &config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": CONFIG_MEDIA_TYPE,
            "config": config_descriptor,
            "layers": [layer_descriptor],
            "annotations": {
                "org.opencontainers.image.created": created,
            },
        }))
        .expect("a JSON value serializes");
        let digest = sha256(&manifest);
        Self {
            config,
            config_descriptor,
            layer_descriptor,
            manifest,
            digest,
        }
    }
}

/// The component layer of a pulled manifest, or why the manifest is not a
/// WebAssembly artifact (the message names what it is instead).
pub fn component_layer(manifest: &[u8]) -> Result<Descriptor, String> {
    let manifest: Manifest = serde_json::from_slice(manifest)
        .map_err(|error| format!("its manifest is not an OCI manifest: {error}"))?;
    if manifest.manifests.is_some() {
        return Err(
            "it is an image index (a multi-platform container image), not a WebAssembly \
             artifact"
                .into(),
        );
    }
    let config = manifest
        .config
        .ok_or("its manifest has no config, so it is not a WebAssembly artifact")?;
    let wasm_layers: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|layer| is_wasm_layer(&layer.media_type))
        .collect();
    if config.media_type != CONFIG_MEDIA_TYPE && wasm_layers.is_empty() {
        let what = match config.media_type.as_str() {
            "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json" => "a container image".to_string(),
            other => format!("an artifact of config media type `{other}`"),
        };
        return Err(format!(
            "it is {what}, not a WebAssembly artifact (config `{CONFIG_MEDIA_TYPE}`, one \
             `{LAYER_MEDIA_TYPE}` layer); push the policy's .wasm with `stsguard push`{}",
            match manifest.media_type.as_deref() {
                Some(media_type) => format!(" (manifest `{media_type}`)"),
                None => String::new(),
            }
        ));
    }
    match wasm_layers.as_slice() {
        [layer] => Ok((*layer).clone()),
        [] => Err(format!(
            "its manifest has no `{LAYER_MEDIA_TYPE}` layer (layers: {})",
            manifest
                .layers
                .iter()
                .map(|layer| layer.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        many => Err(format!(
            "its manifest has {} WebAssembly layers; a policy artifact has exactly one",
            many.len()
        )),
    }
}

/// `application/wasm`, and the layer type Kubewarden and wasm-to-oci used (their
/// modules are then refused by the engine's check, which says what they are).
fn is_wasm_layer(media_type: &str) -> bool {
    media_type == LAYER_MEDIA_TYPE || media_type == "application/vnd.wasm.content.layer.v1+wasm"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anatomy() -> Anatomy {
        Anatomy::read(crate::builtin::module("parallel").unwrap()).unwrap()
    }

    #[test]
    fn a_pushed_artifact_is_the_cncf_layout_and_reads_back() {
        let component = crate::builtin::module("parallel").unwrap();
        let artifact = Artifact::new(component, &anatomy(), "2026-12-02T00:00:00Z");
        let manifest: serde_json::Value = serde_json::from_slice(&artifact.manifest).unwrap();
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(manifest["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(manifest["layers"][0]["size"], component.len());
        assert_eq!(artifact.digest, sha256(&artifact.manifest));
        let config: serde_json::Value = serde_json::from_slice(&artifact.config).unwrap();
        assert_eq!(config["os"], "wasip2");
        assert_eq!(config["layerDigests"][0], sha256(component));
        let exports = config["component"]["exports"].as_array().unwrap();
        assert!(exports.iter().any(|e| e == "evaluate"), "{exports:?}");
        assert_eq!(
            config["component"]["target"],
            format!(
                "stsguard:policy/policy@{}",
                crate::engine::anatomy::contract_version()
            )
        );
        assert_eq!(
            component_layer(&artifact.manifest).unwrap(),
            artifact.layer_descriptor
        );
    }

    #[test]
    fn other_artifacts_are_named_for_what_they_are() {
        let image = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":2},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:bb","size":9}]}"#;
        let error = component_layer(image.as_bytes()).unwrap_err();
        assert!(error.contains("it is a container image"), "{error}");
        assert!(error.contains("stsguard push"), "{error}");

        let index = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(
            component_layer(index.as_bytes())
                .unwrap_err()
                .contains("image index")
        );

        let helm = r#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:aa","size":2},"layers":[]}"#;
        let error = component_layer(helm.as_bytes()).unwrap_err();
        assert!(
            error.contains("config media type `application/vnd.cncf.helm.config.v1+json`"),
            "{error}"
        );

        let no_layer = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{CONFIG_MEDIA_TYPE}","digest":"sha256:aa","size":2}},"layers":[{{"mediaType":"text/plain","digest":"sha256:bb","size":1}}]}}"#
        );
        let error = component_layer(no_layer.as_bytes()).unwrap_err();
        assert!(
            error.contains("no `application/wasm` layer (layers: text/plain)"),
            "{error}"
        );
        assert!(
            component_layer(b"<html>")
                .unwrap_err()
                .contains("not an OCI manifest")
        );
    }
}
