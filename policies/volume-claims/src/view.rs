//! The parts of a StatefulSet the policy reads, straight from the request JSON.
//!
//! Reading the whole typed k8s-openapi `StatefulSet` costs tens of microseconds
//! in WebAssembly; this view reads only the claim templates and the names of pod
//! volumes and volume mounts. It reads them as k8s-openapi does (a missing or
//! `null` required field is its default; quantities are k8s-openapi's type). A
//! shape the view refuses goes through the typed view instead (see
//! [`Request::object_view`](stsguard_policy::Request::object_view)), whose error fails the evaluation.

use std::collections::BTreeMap;

use serde::Deserialize;
use stsguard_policy::k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A StatefulSet, as far as the policy reads it.
#[derive(Debug, Deserialize)]
pub struct StatefulSet {
    pub spec: Option<Spec>,
}

/// `spec`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default, deserialize_with = "stsguard_policy::json::null_as_default")]
    pub template: PodTemplate,
    pub volume_claim_templates: Option<Vec<ClaimTemplate>>,
}

/// `spec.template`.
#[derive(Debug, Default, Deserialize)]
pub struct PodTemplate {
    pub spec: Option<PodSpec>,
}

/// `spec.template.spec`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "stsguard_policy::json::null_as_default")]
    pub containers: Vec<Container>,
    pub init_containers: Option<Vec<Container>>,
    pub volumes: Option<Vec<Named>>,
}

/// A container or init container.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub volume_mounts: Option<Vec<Named>>,
}

/// A pod volume or a volume mount: only its name.
#[derive(Debug, Deserialize)]
pub struct Named {
    #[serde(default, deserialize_with = "stsguard_policy::json::null_as_default")]
    pub name: String,
}

/// One of `spec.volumeClaimTemplates`.
#[derive(Debug, Deserialize)]
pub struct ClaimTemplate {
    #[serde(default, deserialize_with = "stsguard_policy::json::null_as_default")]
    pub metadata: ClaimMetadata,
    pub spec: Option<ClaimSpec>,
}

/// A claim template's `metadata`.
#[derive(Debug, Default, Deserialize)]
pub struct ClaimMetadata {
    pub name: Option<String>,
}

/// A claim template's `spec`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    pub access_modes: Option<Vec<String>>,
    pub resources: Option<Resources>,
}

/// A claim template's `spec.resources`.
#[derive(Debug, Deserialize)]
pub struct Resources {
    pub requests: Option<BTreeMap<String, Quantity>>,
}

#[cfg(test)]
mod tests {
    use stsguard_policy::serde_json::{self, json};
    use stsguard_policy::testing;

    use super::*;
    use crate::VolumeClaimsPolicy;

    #[test]
    fn nulls_and_missing_required_fields_read_as_defaults() {
        let view: StatefulSet = serde_json::from_value(json!({"spec": {
            "template": {"spec": {"containers": null, "volumes": [{"name": null}]}},
            "volumeClaimTemplates": [{"metadata": null}],
        }}))
        .unwrap();
        let spec = view.spec.unwrap();
        let pod = spec.template.spec.unwrap();
        assert!(pod.containers.is_empty());
        assert_eq!(pod.volumes.unwrap()[0].name, "");
        assert_eq!(spec.volume_claim_templates.unwrap()[0].metadata.name, None);
    }

    #[test]
    fn a_shape_k8s_openapi_refuses_is_its_error() {
        for spec in [
            json!({"template": {"spec": {"containers": {"name": "a"}}}}),
            json!({"volumeClaimTemplates": [{"spec": {"accessModes": "ReadWriteOnce"}}]}),
        ] {
            let object = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "spec": spec});
            let error = testing::evaluate::<VolumeClaimsPolicy>(
                &testing::create_request(object),
                &json!({}),
            )
            .unwrap_err();
            assert!(
                error.contains("cannot read `object` as apps/v1 StatefulSet"),
                "{error}"
            );
        }
    }
}
