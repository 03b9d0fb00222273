//! Objects from manifest files, and the AdmissionRequests the API server would
//! send for them: what `eval` and `test` evaluate.
//!
//! Note that the API server *defaults* objects before webhooks see them;
//! manifests are evaluated as written, and the built-in policies treat an absent
//! field as its default.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cluster::Offline;
use crate::engine::ClusterReader;
use crate::review::{self, ReviewRequest};
use stsguard_contract::request::{self, Requester};

/// Every object in a manifest file, with where it came from (`file#document`).
/// `List` objects are unpacked; empty documents are skipped.
pub fn read_objects(path: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    let (name, text) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        ("stdin".to_string(), text)
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        (path.display().to_string(), text)
    };
    parse_objects(&name, &text)
}

/// [`read_objects`] of text that came from `name`.
pub fn parse_objects(name: &str, text: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let mut objects = Vec::new();
    for (number, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).with_context(|| {
            format!("{name}: document {} is not valid YAML or JSON", number + 1)
        })?;
        let origin = format!("{name}#{}", number + 1);
        match value {
            Value::Null => {}
            Value::Object(_) if value["kind"] == "List" => {
                for item in value["items"].as_array().into_iter().flatten() {
                    objects.push((origin.clone(), item.clone()));
                }
            }
            Value::Object(_) => objects.push((origin, value)),
            _ => bail!("{origin} is not a Kubernetes object (a mapping with apiVersion and kind)"),
        }
    }
    Ok(objects)
}

/// Cluster objects (`--context`, a suite's `context:`), each with where it
/// came from, as an offline cluster for the policies that read it; none: an
/// empty cluster.
pub fn context_objects(objects: Vec<(String, Value)>) -> anyhow::Result<Arc<dyn ClusterReader>> {
    let mut placed = Vec::with_capacity(objects.len());
    for (origin, object) in objects {
        // One at a time, so that an error names the object's origin.
        Offline::from_objects([object.clone()])
            .map_err(|e| anyhow::anyhow!("{origin}: cannot be a context object: {e}"))?;
        placed.push(object);
    }
    let offline = Offline::from_objects(placed).map_err(anyhow::Error::msg)?;
    Ok(offline.reader())
}

/// API version, kind, namespace and name: how an object is matched with its
/// older version.
pub fn identity(object: &Value) -> (String, String, String, String) {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    (
        text("/apiVersion"),
        text("/kind"),
        namespace,
        text("/metadata/name"),
    )
}

/// The AdmissionRequest JSON the API server would send for `object`: CREATE,
/// or UPDATE of `old`.
pub fn admission_request(
    object: &Value,
    old: Option<Value>,
    who: &Requester<'_>,
) -> anyhow::Result<Value> {
    let named = |key: &str| object[key].as_str().is_some_and(|s| !s.is_empty());
    if !named("apiVersion") || !named("kind") {
        bail!("it has no apiVersion and kind");
    }
    Ok(request::admission_request(
        object.clone(),
        old,
        Some("default"),
        who,
    ))
}

/// Parses an AdmissionRequest (the `request` member) as the server would.
pub fn parse_request(request: Value) -> anyhow::Result<ReviewRequest> {
    review::parse_request(request).map_err(|e| anyhow::anyhow!(e.message))
}

/// Settings given on the command line: JSON or YAML text, or `@FILE`.
pub fn settings_argument(text: &str) -> anyhow::Result<Value> {
    let (origin, text) = match text.strip_prefix('@') {
        Some(path) => (
            path.to_string(),
            std::fs::read_to_string(path).with_context(|| format!("could not read {path}"))?,
        ),
        None => ("--settings".to_string(), text.to_string()),
    };
    let value: Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{origin} is not valid JSON or YAML"))?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(json!({})),
        other => bail!("{origin} must be a mapping of settings, not {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_unpacked_and_empty_documents_skipped() {
        let text = "---\n---\nkind: List\nitems:\n- {apiVersion: v1, kind: A}\n- {apiVersion: v1, kind: B}\n---\n{apiVersion: v1, kind: C}\n";
        let objects = parse_objects("m.yaml", text).unwrap();
        let kinds: Vec<_> = objects
            .iter()
            .map(|(origin, o)| format!("{origin} {}", o["kind"].as_str().unwrap()))
            .collect();
        assert_eq!(kinds, ["m.yaml#2 A", "m.yaml#2 B", "m.yaml#3 C"]);
        let error = parse_objects("m.yaml", "- 1\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "m.yaml#1 is not a Kubernetes object (a mapping with apiVersion and kind)"
        );
    }

    #[test]
    fn settings_come_as_text_or_from_a_file() {
        assert_eq!(settings_argument(r#"{"a": 1}"#).unwrap(), json!({"a": 1}));
        assert_eq!(settings_argument("a: 1").unwrap(), json!({"a": 1}));
        assert_eq!(settings_argument("").unwrap(), json!({}));
        let error = settings_argument("[1]").unwrap_err().to_string();
        assert!(error.contains("must be a mapping"), "{error}");
        let error = settings_argument("@/no/such/file").unwrap_err().to_string();
        assert_eq!(error, "could not read /no/such/file");
    }
}
