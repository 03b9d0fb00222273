//! AdmissionReview `admission.k8s.io/v1` on the wire: reading a request and
//! writing a response. Nothing here decides anything.
//!
//! The request is kept as the JSON the API server sent, not deserialized into
//! typed structs: policies must see every field, including ones newer than any
//! Rust type: no field is ever lost. Only the few fields the
//! host routes on are read, and `oldObject`, which the host only passes on, stays
//! the text it was ([`envelope`]). The response is written against the
//! Kubernetes documentation ("Dynamic Admission Control", response): `uid`
//! echoed, `patchType: JSONPatch` with `patch` a base64 string of an RFC 6902
//! array, only when there is a patch; `status.code` and `status.message` when not
//! allowed; warnings; `auditAnnotations`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use stsguard_contract::text::ObjectName;
use stsguard_contract::{GroupVersionKind, Operation};

mod envelope;

pub const API_VERSION: &str = "admission.k8s.io/v1";

/// The fields of an AdmissionRequest the host routes on, plus the raw request
/// and its object.
#[derive(Debug, Clone)]
pub struct ReviewRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub operation: Operation,
    pub namespace: String,
    pub name: String,
    pub sub_resource: String,
    pub dry_run: bool,
    /// The `request` member as received, without `object` and `oldObject`.
    pub raw: Value,
    /// `request.object` (`null` when absent): what the policies see and change.
    /// The chain changes it in place; see `PolicySet::evaluate`.
    pub object: Value,
    /// `request.oldObject` as the API server wrote it (`null` on CREATE); `None`
    /// when absent. Kept as text: the host only passes it on (see [`envelope`]).
    pub old_object: Option<Box<RawValue>>,
}

impl ReviewRequest {
    /// The object as messages name it: `StatefulSet default/web`.
    pub fn object_name(&self) -> ObjectName<'_> {
        ObjectName {
            kind: &self.kind.kind,
            namespace: &self.namespace,
            name: &self.name,
            generate_name: self.object["metadata"]["generateName"].as_str(),
        }
    }
}

/// Why a body is not an AdmissionReview the server can answer. The uid is kept
/// when it could be read, so the answer can still be matched to the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidReview {
    pub uid: String,
    pub message: String,
}

/// Parses an AdmissionRequest made up for an object (the `request` member, as
/// `stsguard_contract::request` shapes it): what `eval`, `test` and the audit
/// decide, read exactly as a review from the API server would be.
pub fn parse_request(request: serde_json::Value) -> Result<ReviewRequest, InvalidReview> {
    let review = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "request": request,
    });
    parse(review.to_string().as_bytes())
}

/// Parses an AdmissionReview body.
pub fn parse(body: &[u8]) -> Result<ReviewRequest, InvalidReview> {
    let invalid = |uid: &str, message: String| InvalidReview {
        uid: uid.to_string(),
        message,
    };
    let body = envelope::Body::read(body)
        .map_err(|e| invalid("", format!("the body is not valid JSON: {e}")))?;
    let envelope::Body::Object {
        members: review,
        request,
    } = body
    else {
        return Err(invalid("", "the body is not a JSON object".into()));
    };
    let text = |key: &str| {
        review
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let (mut raw, old_object) = match request {
        Some(envelope::Request::Object {
            members,
            old_object,
        }) => (Value::Object(members), old_object),
        _ => (Value::Null, None),
    };
    let uid = raw
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind != "AdmissionReview" {
        return Err(invalid(
            &uid,
            format!("expected kind AdmissionReview, got `{kind}`"),
        ));
    }
    if api_version != API_VERSION {
        return Err(invalid(
            &uid,
            format!(
                "unsupported apiVersion `{api_version}`: stsguard speaks {API_VERSION}; set \
                 admissionReviewVersions: [v1] in the webhook configuration"
            ),
        ));
    }
    if !raw.is_object() {
        return Err(invalid(
            &uid,
            "the AdmissionReview has no `request` object".into(),
        ));
    }
    if uid.is_empty() {
        return Err(invalid(
            &uid,
            "the AdmissionReview request has no `uid`".into(),
        ));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Routing {
        kind: GroupVersionKind,
        operation: Operation,
        #[serde(default)]
        namespace: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        sub_resource: Option<String>,
        #[serde(default)]
        dry_run: Option<bool>,
    }
    let routing = Routing::deserialize(&raw).map_err(|e| {
        invalid(
            &uid,
            format!("the AdmissionReview request is malformed: {e}"),
        )
    })?;
    // Policies read `object`: a JSON null when there is none.
    let object = raw
        .as_object_mut()
        .and_then(|request| request.remove("object"))
        .unwrap_or(Value::Null);
    Ok(ReviewRequest {
        uid,
        kind: routing.kind,
        operation: routing.operation,
        namespace: routing.namespace.unwrap_or_default(),
        name: routing.name.unwrap_or_default(),
        sub_resource: routing.sub_resource.unwrap_or_default(),
        dry_run: routing.dry_run.unwrap_or(false),
        raw,
        object,
        old_object,
    })
}

/// The answer to one review; serializes itself as the whole AdmissionReview.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a response does nothing unless it is sent"]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    /// Set when not allowed.
    pub status: Option<Status>,
    /// RFC 6902 JSON Patch, serialized.
    pub patch: Option<Vec<u8>>,
    pub warnings: Vec<String>,
    /// Keyed by policy name; the API server files each one in the audit log as
    /// `<webhook name>/<policy>`.
    pub audit_annotations: BTreeMap<String, String>,
}

/// Why a review was not allowed: an HTTP-like code and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

impl Response {
    /// Allows the request unchanged.
    pub fn allow(uid: impl Into<String>) -> Self {
        Self {
            uid: uid.into(),
            allowed: true,
            status: None,
            patch: None,
            warnings: Vec::new(),
            audit_annotations: BTreeMap::new(),
        }
    }

    /// Denies the request: 403 with the reason the user reads.
    pub fn deny(uid: impl Into<String>, message: impl Into<String>) -> Self {
        Self::refuse(uid, 403, message.into())
    }

    /// The answer to a body that is not a usable AdmissionReview: 400.
    pub fn invalid(error: &InvalidReview) -> Self {
        Self::refuse(
            error.uid.clone(),
            400,
            format!(
                "stsguard could not read the admission review: {}",
                error.message
            ),
        )
    }

    /// A refusal of a review the server could not evaluate at all (no policy set
    /// loaded yet: 503; an internal failure: 500). It is an answer, so the API
    /// server refuses the write whatever the webhook's failurePolicy (which
    /// applies only when the call fails); the details are in the stsguard log.
    pub fn unavailable(uid: impl Into<String>, code: u16, message: impl Into<String>) -> Self {
        Self::refuse(uid, code, message.into())
    }

    fn refuse(uid: impl Into<String>, code: u16, message: String) -> Self {
        Self {
            allowed: false,
            status: Some(Status { code, message }),
            ..Self::allow(uid)
        }
    }

    /// With this serialized JSON Patch (only for an allowed request).
    pub fn with_patch(mut self, patch: Option<Vec<u8>>) -> Self {
        self.patch = patch.filter(|_| self.allowed);
        self
    }

    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings;
        self
    }

    pub fn with_audit_annotations(mut self, annotations: BTreeMap<String, String>) -> Self {
        self.audit_annotations = annotations;
        self
    }
}

impl Serialize for Response {
    /// `{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {...}}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Inner<'a>(&'a Response);
        impl Serialize for Inner<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let response = self.0;
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("uid", &response.uid)?;
                map.serialize_entry("allowed", &response.allowed)?;
                if let Some(status) = &response.status {
                    map.serialize_entry("status", status)?;
                }
                if let Some(patch) = &response.patch {
                    map.serialize_entry("patchType", "JSONPatch")?;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
                    map.serialize_entry("patch", &encoded)?;
                }
                if !response.warnings.is_empty() {
                    map.serialize_entry("warnings", &response.warnings)?;
                }
                if !response.audit_annotations.is_empty() {
                    map.serialize_entry("auditAnnotations", &response.audit_annotations)?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("apiVersion", API_VERSION)?;
        map.serialize_entry("kind", "AdmissionReview")?;
        map.serialize_entry("response", &Inner(self))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        }))
        .unwrap()
    }

    fn create_request() -> Value {
        json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
            "resource": {"group": "apps", "version": "v1", "resource": "statefulsets"},
            "operation": "CREATE",
            "namespace": "default",
            "name": "web",
            "object": {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"}},
            "dryRun": false,
        })
    }

    #[test]
    fn reads_routing_fields_and_keeps_the_raw_request() {
        let request = parse(&review(create_request())).unwrap();
        assert_eq!(request.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(request.kind.kind, "StatefulSet");
        assert_eq!(request.operation, Operation::Create);
        assert_eq!(request.object_name().to_string(), "StatefulSet default/web");
        assert_eq!(request.raw["resource"]["resource"], "statefulsets");
    }

    #[test]
    fn names_cluster_scoped_and_generated_objects() {
        let mut cluster_scoped = create_request();
        cluster_scoped.as_object_mut().unwrap().remove("namespace");
        let request = parse(&review(cluster_scoped)).unwrap();
        assert_eq!(request.object_name().to_string(), "StatefulSet web");
        let mut generated = create_request();
        generated["name"] = json!("");
        generated["object"]["metadata"] = json!({"generateName": "web-"});
        let request = parse(&review(generated)).unwrap();
        assert_eq!(
            request.object_name().to_string(),
            "StatefulSet default/web-*"
        );
    }

    #[test]
    fn rejects_what_is_not_a_v1_review_with_a_reason() {
        let cases: Vec<(Vec<u8>, &str, &str)> = vec![
            (b"{not json".to_vec(), "", "not valid JSON"),
            (b"[1,2]".to_vec(), "", "not a JSON object"),
            (
                serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": create_request()})).unwrap(),
                "705ab4f5-6393-11e8-b7cc-42010a800002",
                "unsupported apiVersion",
            ),
            (serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod"})).unwrap(), "", "expected kind AdmissionReview"),
            (serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": "AdmissionReview"})).unwrap(), "", "no `request`"),
            (review(json!({"kind": {"kind": "StatefulSet"}, "operation": "CREATE"})), "", "no `uid`"),
            (review(json!({"uid": "u1", "kind": {"kind": "StatefulSet"}, "operation": "PATCH"})), "u1", "unknown variant `PATCH`"),
        ];
        for (body, uid, expected) in cases {
            let error = parse(&body).unwrap_err();
            assert_eq!(error.uid, uid);
            assert!(error.message.contains(expected), "{}", error.message);
        }
    }

    #[test]
    fn deeply_nested_json_is_refused_not_a_stack_overflow() {
        let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body = deep(100_000);
        let error = parse(body.as_bytes()).unwrap_err();
        assert!(
            error.message.contains("not a JSON object"),
            "{}",
            error.message
        );
        for member in ["object", "oldObject", "userInfo"] {
            let body = format!(
                r#"{{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "request": {{"uid": "u", "{member}": {}}}}}"#,
                deep(100_000)
            );
            let error = parse(body.as_bytes()).unwrap_err();
            assert!(
                error.message.contains("recursion limit"),
                "{member}: {}",
                error.message
            );
        }
    }

    #[test]
    fn response_wire_format_matches_the_kubernetes_docs() {
        let response = Response::allow("u1")
            .with_patch(Some(
                br#"[{"op": "add", "path": "/spec/replicas", "value": 3}]"#.to_vec(),
            ))
            .with_warnings(vec!["w".into()])
            .with_audit_annotations([("probes".to_string(), "mutated".to_string())].into());
        let review = serde_json::to_value(&response).unwrap();
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["uid"], "u1");
        assert_eq!(review["response"]["allowed"], true);
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        // The example from the docs: base64 of the patch array.
        assert_eq!(
            review["response"]["patch"],
            "W3sib3AiOiAiYWRkIiwgInBhdGgiOiAiL3NwZWMvcmVwbGljYXMiLCAidmFsdWUiOiAzfV0="
        );
        assert_eq!(review["response"]["warnings"], json!(["w"]));
        assert_eq!(
            review["response"]["auditAnnotations"],
            json!({"probes": "mutated"})
        );
        assert!(review["response"].get("status").is_none());
    }

    #[test]
    fn a_refusal_has_a_status_and_no_patch_fields() {
        let response = Response::invalid(&InvalidReview {
            uid: "u2".into(),
            message: "bad".into(),
        });
        let review = serde_json::to_value(&response).unwrap();
        assert_eq!(review["response"]["allowed"], false);
        assert_eq!(review["response"]["status"]["code"], 400);
        assert!(
            review["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("bad")
        );
        assert!(review["response"].get("patchType").is_none());
        assert!(review["response"].get("warnings").is_none());
        assert!(review["response"].get("auditAnnotations").is_none());
        let denied = Response::deny("u3", "no").with_patch(Some(b"[]".to_vec()));
        assert_eq!(denied.patch, None, "a denial never carries a patch");
        assert_eq!(denied.status.unwrap().code, 403);
    }
}
