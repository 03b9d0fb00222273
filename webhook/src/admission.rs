//! AdmissionReview `admission.k8s.io/v1` on the wire, and the decision for one
//! review.
//!
//! The request is kept as the JSON the API server sent, not deserialized into
//! typed structs: policies must see every field, including ones newer than any
//! Rust type (see DESIGN.md, "no field is ever lost"). Only the few fields the
//! host routes on are read, and `oldObject`, which the host only passes on, stays
//! the text it was ([`envelope`]). The response is written by hand against the
//! Kubernetes documentation ("Dynamic Admission Control", response): `uid` echoed,
//! `patchType: JSONPatch` with `patch` a base64 string of an RFC 6902 array, only
//! when there is a patch; `status.code` and `status.message` on denial; warnings;
//! `auditAnnotations` saying what each policy did, for the cluster's audit log.
//!
//! Transport is elsewhere: [`decide`] is a pure function of the request and the
//! policy set, unit-tested without a socket.

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::chain::{ChainOutcome, PolicySet, RunResult, Selection};
use crate::config::Mode;

mod envelope;

/// The fields of an AdmissionRequest the host routes on, plus the raw request.
#[derive(Debug, Clone)]
pub struct ReviewRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub operation: Operation,
    pub namespace: String,
    pub name: String,
    pub sub_resource: String,
    pub dry_run: bool,
    /// The `request` member as received, without `oldObject`.
    pub raw: Value,
    /// `request.oldObject` as the API server wrote it (`null` on CREATE); `None`
    /// when absent. Kept as text: the host only passes it on (see [`envelope`]).
    pub old_object: Option<Box<RawValue>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

/// Why a body is not an AdmissionReview the server can answer. The uid is kept
/// when it could be read, so the answer can still be matched to the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidReview {
    pub uid: String,
    pub message: String,
}

/// The answer to one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    /// HTTP-like code and message, set when not allowed.
    pub status: Option<(u16, String)>,
    /// RFC 6902 JSON Patch, serialized.
    pub patch: Option<Vec<u8>>,
    pub warnings: Vec<String>,
    /// Keyed by policy name; the API server files each one in the audit log as
    /// `<webhook name>/<policy>`.
    pub audit_annotations: BTreeMap<String, String>,
}

pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Parses an AdmissionReview body.
pub fn parse_review(body: &[u8]) -> Result<ReviewRequest, InvalidReview> {
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
    // Policies read `object`; make sure a JSON null is there rather than nothing.
    if let Some(request) = raw.as_object_mut() {
        request.entry("object").or_insert(Value::Null);
    }
    Ok(ReviewRequest {
        uid,
        kind: routing.kind,
        operation: routing.operation,
        namespace: routing.namespace.unwrap_or_default(),
        name: routing.name.unwrap_or_default(),
        sub_resource: routing.sub_resource.unwrap_or_default(),
        dry_run: routing.dry_run.unwrap_or(false),
        raw,
        old_object,
    })
}

impl ReviewRequest {
    /// `StatefulSet default/web`, for messages; the name may be generated later.
    pub fn describe(&self) -> String {
        let name = if self.name.is_empty() {
            self.raw["object"]["metadata"]["generateName"]
                .as_str()
                .map(|prefix| format!("{prefix}*"))
                .unwrap_or_else(|| "(unnamed)".into())
        } else {
            self.name.clone()
        };
        if self.namespace.is_empty() {
            format!("{} {name}", self.kind.kind)
        } else {
            format!("{} {}/{name}", self.kind.kind, self.namespace)
        }
    }
}

/// Decides one review: runs the selected policies and turns the chain's outcome
/// into a response. Never fails: policy errors are already resolved by each
/// policy's failurePolicy inside the chain.
pub fn decide(
    request: &ReviewRequest,
    policies: &PolicySet,
    selection: Selection<'_>,
    deadline: Instant,
) -> (Response, ChainOutcome) {
    let outcome = policies.evaluate(request, selection, deadline);
    let response = respond(request, &outcome);
    (response, outcome)
}

fn respond(request: &ReviewRequest, outcome: &ChainOutcome) -> Response {
    let mut response = Response {
        uid: request.uid.clone(),
        allowed: true,
        status: None,
        patch: None,
        warnings: outcome.warnings.clone(),
        audit_annotations: audit_annotations(outcome),
    };
    if let Some(denial) = &outcome.denial {
        response.allowed = false;
        response.status = Some((
            403,
            format!(
                "policy {} denied {}: {}",
                denial.policy,
                request.describe(),
                denial.message
            ),
        ));
    } else if let Some(patch) = &outcome.patch {
        response.patch = Some(serde_json::to_vec(patch).expect("a JSON patch serializes"));
    }
    response
}

/// What each policy did, for the cluster's audit log. Warnings reach only the
/// client that made the request; these stay with the request's audit event, so
/// an operator can later find what monitor mode saw and which policies failed and
/// were skipped. Only what matters afterwards is recorded: a review that every
/// policy allowed unchanged adds nothing to the log.
fn audit_annotations(outcome: &ChainOutcome) -> BTreeMap<String, String> {
    let denied_by = outcome.denial.as_ref().map(|denial| denial.policy.as_str());
    outcome
        .runs
        .iter()
        .filter_map(|run| {
            let monitor = run.mode == Mode::Monitor;
            let what = match &run.result {
                RunResult::Allowed { mutated: false } => return None,
                RunResult::Allowed { mutated: true } if monitor => "monitor: would mutate".into(),
                RunResult::Allowed { mutated: true } => "mutated".into(),
                RunResult::Denied if monitor => "monitor: would deny".into(),
                RunResult::Denied => "denied".into(),
                RunResult::Failed(error) => {
                    let effect = if denied_by == Some(&*run.policy) {
                        "denied (failurePolicy fail)"
                    } else {
                        "skipped"
                    };
                    format!("failed ({}): {effect}", error.reason())
                }
            };
            Some((run.policy.to_string(), what))
        })
        .collect()
}

/// The response for a body that is not a usable AdmissionReview.
pub fn invalid(error: &InvalidReview) -> Response {
    Response {
        uid: error.uid.clone(),
        allowed: false,
        status: Some((
            400,
            format!(
                "stsguard could not read the admission review: {}",
                error.message
            ),
        )),
        patch: None,
        warnings: Vec::new(),
        audit_annotations: BTreeMap::new(),
    }
}

impl Response {
    /// The AdmissionReview JSON to send back.
    pub fn to_review(&self) -> Value {
        let mut response = serde_json::json!({
            "uid": self.uid,
            "allowed": self.allowed,
        });
        if let Some((code, message)) = &self.status {
            response["status"] = serde_json::json!({ "code": code, "message": message });
        }
        if let Some(patch) = &self.patch {
            response["patchType"] = "JSONPatch".into();
            response["patch"] = base64::engine::general_purpose::STANDARD
                .encode(patch)
                .into();
        }
        if !self.warnings.is_empty() {
            response["warnings"] = self.warnings.clone().into();
        }
        if !self.audit_annotations.is_empty() {
            response["auditAnnotations"] = serde_json::json!(self.audit_annotations);
        }
        serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "AdmissionReview",
            "response": response,
        })
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
        let request = parse_review(&review(create_request())).unwrap();
        assert_eq!(request.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(request.kind.kind, "StatefulSet");
        assert_eq!(request.operation, Operation::Create);
        assert_eq!(request.describe(), "StatefulSet default/web");
        assert_eq!(request.raw["resource"]["resource"], "statefulsets");
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
            let error = parse_review(&body).unwrap_err();
            assert_eq!(error.uid, uid);
            assert!(error.message.contains(expected), "{}", error.message);
        }
    }

    #[test]
    fn deeply_nested_json_is_refused_not_a_stack_overflow() {
        let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body = deep(100_000);
        let error = parse_review(body.as_bytes()).unwrap_err();
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
            let error = parse_review(body.as_bytes()).unwrap_err();
            assert!(
                error.message.contains("recursion limit"),
                "{member}: {}",
                error.message
            );
        }
    }

    #[test]
    fn response_wire_format_matches_the_kubernetes_docs() {
        let response = Response {
            uid: "u1".into(),
            allowed: true,
            status: None,
            patch: Some(br#"[{"op": "add", "path": "/spec/replicas", "value": 3}]"#.to_vec()),
            warnings: vec!["w".into()],
            audit_annotations: [("probes".to_string(), "mutated".to_string())].into(),
        };
        let review = response.to_review();
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
    fn audit_annotations_record_what_each_policy_did_that_matters() {
        use crate::chain::{Denial, PolicyRun};
        use crate::engine::EvalError;
        let run = |policy: &str, mode: Mode, result: RunResult| PolicyRun {
            policy: policy.into(),
            mode,
            duration: std::time::Duration::ZERO,
            result,
        };
        let outcome = ChainOutcome {
            runs: vec![
                run(
                    "quiet",
                    Mode::Enforce,
                    RunResult::Allowed { mutated: false },
                ),
                run(
                    "probes",
                    Mode::Enforce,
                    RunResult::Allowed { mutated: true },
                ),
                run("trial", Mode::Monitor, RunResult::Allowed { mutated: true }),
                run("strict", Mode::Monitor, RunResult::Denied),
                run(
                    "slow",
                    Mode::Enforce,
                    RunResult::Failed(EvalError::Timeout(std::time::Duration::from_secs(1))),
                ),
                run(
                    "broken",
                    Mode::Enforce,
                    RunResult::Failed(EvalError::Trap("unreachable".into())),
                ),
            ],
            denial: Some(Denial {
                policy: "broken".into(),
                message: "could not evaluate".into(),
            }),
            ..ChainOutcome::default()
        };
        let annotations = serde_json::json!(audit_annotations(&outcome));
        assert_eq!(
            annotations,
            json!({
                "probes": "mutated",
                "trial": "monitor: would mutate",
                "strict": "monitor: would deny",
                "slow": "failed (timeout): skipped",
                "broken": "failed (trap): denied (failurePolicy fail)",
            })
        );
        let denied = ChainOutcome {
            runs: vec![run("gate", Mode::Enforce, RunResult::Denied)],
            ..ChainOutcome::default()
        };
        assert_eq!(json!(audit_annotations(&denied)), json!({"gate": "denied"}));
        assert!(audit_annotations(&ChainOutcome::default()).is_empty());
    }

    #[test]
    fn denial_has_a_status_and_no_patch_fields() {
        let response = invalid(&InvalidReview {
            uid: "u2".into(),
            message: "bad".into(),
        });
        let review = response.to_review();
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
    }
}
