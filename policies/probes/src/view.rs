//! The parts of a StatefulSet the policy reads, straight from the request JSON.
//!
//! Reading the whole typed k8s-openapi `StatefulSet` costs tens of microseconds
//! in WebAssembly; this view reads only the pod template's annotations and
//! containers. It reads them as k8s-openapi does (a missing or `null` required
//! field is its default), and the small parts it reads whole, ports and probes,
//! are k8s-openapi's own types. A shape the view refuses goes through the typed
//! view instead (see [`Request::object_view`](stsguard_policy::Request::object_view)), whose error fails the evaluation.

use std::collections::BTreeMap;

use serde::Deserialize;
use stsguard_policy::k8s_openapi::api::core::v1::{ContainerPort, Probe};

/// A StatefulSet, as far as the policy reads it.
#[derive(Debug, Deserialize)]
pub struct StatefulSet {
    pub spec: Option<Spec>,
}

/// `spec`.
#[derive(Debug, Deserialize)]
pub struct Spec {
    #[serde(default, deserialize_with = "stsguard_policy::json::null_as_default")]
    pub template: PodTemplate,
}

/// `spec.template`.
#[derive(Debug, Default, Deserialize)]
pub struct PodTemplate {
    pub metadata: Option<Metadata>,
    pub spec: Option<PodSpec>,
}

/// `spec.template.metadata`.
#[derive(Debug, Deserialize)]
pub struct Metadata {
    pub annotations: Option<BTreeMap<String, String>>,
}

/// `spec.template.spec`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "stsguard_policy::json::null_as_default")]
    pub containers: Vec<Container>,
    pub init_containers: Option<Vec<Container>>,
}

/// A container or init container.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, deserialize_with = "stsguard_policy::json::null_as_default")]
    pub name: String,
    pub ports: Option<Vec<ContainerPort>>,
    pub readiness_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    pub restart_policy: Option<String>,
}

/// Just `spec.template`, as JSON: what an UPDATE compares to see whether the pod
/// template (and so every pod) changes.
#[derive(Debug, PartialEq, Deserialize)]
pub struct TemplateJson {
    spec: Option<TemplateSpecJson>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct TemplateSpecJson {
    template: Option<stsguard_policy::serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use stsguard_policy::serde_json::{self, json};
    use stsguard_policy::testing;

    use super::*;
    use crate::ProbesPolicy;

    #[test]
    fn nulls_and_missing_required_fields_read_as_defaults() {
        let view: StatefulSet = serde_json::from_value(json!({
            "spec": {"template": {"spec": {"containers": [{"name": null}]}}}
        }))
        .unwrap();
        let pod = view.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers[0].name, "");
        let view: StatefulSet =
            serde_json::from_value(json!({"spec": {"template": null}})).unwrap();
        assert!(view.spec.unwrap().template.spec.is_none());
    }

    #[test]
    fn a_shape_k8s_openapi_refuses_is_its_error() {
        for object in [
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "spec": {"template": {"spec": {"containers": {"name": "a"}}}}}),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                   "spec": {"template": {"spec": {"containers": [
                       {"name": "a", "ports": [{"containerPort": "http"}]}]}}}}),
        ] {
            let error =
                testing::evaluate::<ProbesPolicy>(&testing::create_request(object), &json!({}))
                    .unwrap_err();
            assert!(
                error.contains("cannot read `object` as apps/v1 StatefulSet"),
                "{error}"
            );
        }
    }
}
