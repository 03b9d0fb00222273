//! The audit against kube's own test facility: a `kube::Client` whose API
//! server is the test (`tower_test::mock`), and the real built-in policies.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;
use crate::config::Config;

const LAB: &str = include_str!("../../../deploy/examples/lab-statefulset.yaml");
const NO_CLAIMS: &str = include_str!("../../../deploy/examples/no-volume-claim-templates.yaml");

use crate::testing::engine;

/// The built-in policies, loaded once.
pub(crate) fn builtins() -> &'static PolicySet {
    static POLICIES: OnceLock<PolicySet> = OnceLock::new();
    POLICIES.get_or_init(|| PolicySet::load(engine(), &Config::default()).unwrap())
}

pub(crate) fn auditor(policies: &PolicySet) -> Auditor<'_> {
    Auditor {
        policies,
        timeout: Duration::from_secs(8),
    }
}

/// Retries without the waiting.
pub(crate) const FAST: Retry = Retry {
    attempts: 3,
    initial: Duration::from_millis(1),
    max: Duration::from_millis(2),
};

/// The StatefulSet of an example manifest.
fn example(manifest: &str) -> Value {
    serde_yaml::Deserializer::from_str(manifest)
        .map(|document| Value::deserialize(document).unwrap())
        .find(|object| object["kind"] == "StatefulSet")
        .unwrap()
}

/// `object` as the API server lists it: no apiVersion and kind (list items have
/// none), server fields, a status.
pub(crate) fn stored(mut object: Value, namespace: &str, name: &str) -> Value {
    let fields = object.as_object_mut().unwrap();
    fields.remove("apiVersion");
    fields.remove("kind");
    object["metadata"]["name"] = json!(name);
    object["metadata"]["namespace"] = json!(namespace);
    object["metadata"]["uid"] = json!(format!("uid-{name}"));
    object["metadata"]["resourceVersion"] = json!("4711");
    object["metadata"]["generation"] = json!(2);
    object["metadata"]["creationTimestamp"] = json!("2026-01-02T03:04:05Z");
    object["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update"}]);
    object["status"] = json!({"replicas": 3, "readyReplicas": 3, "observedGeneration": 2});
    object
}

/// The lab StatefulSet as written: the built-ins add probes and Parallel.
pub(crate) fn lab(namespace: &str, name: &str) -> Value {
    stored(example(LAB), namespace, name)
}

/// The lab StatefulSet as the built-ins leave it: nothing left to change.
pub(crate) fn compliant(namespace: &str, name: &str) -> Value {
    let target = Target::from_item(lab(namespace, name));
    let evaluation = auditor(builtins()).evaluate(target, 0);
    let (request, decision) = evaluation.decided.unwrap();
    assert!(
        decision.outcome.patch.is_some(),
        "the built-ins change the lab"
    );
    stored(request.object, namespace, name)
}

/// A StatefulSet without volumeClaimTemplates: volume-claims denies it.
pub(crate) fn no_claims(namespace: &str, name: &str) -> Value {
    stored(example(NO_CLAIMS), namespace, name)
}

/// What the mock API server answers, in order.
pub(crate) enum Reply {
    /// A list page with these items and continue token (`""`: the last).
    Page(Vec<Value>, &'static str),
    /// An error status, as the API server writes it.
    Status(u16, &'static str, &'static str),
    /// No answer at all: the connection is refused.
    Refused,
    /// 200 OK with this object (what a write returns).
    Object(Value),
    /// A watch response: these events (`{"type": ..., "object": ...}`), one
    /// per line, then the end of the stream.
    Watch(Vec<Value>),
}

/// A request the mock API server saw.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    pub uri: String,
    pub content_type: String,
    pub body: Value,
}

/// A client whose API server answers `replies` in turn, and every request it
/// saw, with its method and body.
pub(crate) fn recording_api_server(replies: Vec<Reply>) -> (kube::Client, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let client = mock(replies, move |request| log.lock().unwrap().push(request));
    (client, seen)
}

/// A client whose API server answers `replies` in turn; the request URIs it
/// saw are in the returned list.
pub(crate) fn api_server(replies: Vec<Reply>) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let client = mock(replies, move |request| {
        log.lock().unwrap().push(request.uri)
    });
    (client, seen)
}

fn mock(replies: Vec<Reply>, log: impl Fn(Seen) + Send + 'static) -> kube::Client {
    use http_body_util::BodyExt;
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        for reply in replies {
            let Some((request, send)) = handle.next_request().await else {
                return;
            };
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            log(Seen {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            let (status, body) = match reply {
                Reply::Page(items, token) => (
                    StatusCode::OK,
                    json!({
                        "kind": "StatefulSetList",
                        "apiVersion": "apps/v1",
                        "metadata": {"resourceVersion": "4712", "continue": token},
                        "items": items,
                    }),
                ),
                Reply::Status(code, reason, message) => (
                    StatusCode::from_u16(code).unwrap(),
                    json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": message, "reason": reason, "code": code,
                    }),
                ),
                Reply::Object(object) => (StatusCode::OK, object),
                Reply::Watch(events) => {
                    let mut body = Vec::new();
                    for event in events {
                        body.extend(serde_json::to_vec(&event).unwrap());
                        body.push(b'\n');
                    }
                    let response = Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", "application/json")
                        .body(Body::from(body))
                        .unwrap();
                    send.send_response(response);
                    continue;
                }
                Reply::Refused => {
                    send.send_error(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
                    continue;
                }
            };
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    kube::Client::new(service, "default")
}

/// Runs the audit of `scope` on `client` with the built-ins; the evaluations in
/// order and how far the run got.
async fn audit(client: kube::Client, scope: Scope) -> (Vec<Evaluation>, Completion) {
    let mut lister = Lister::new(client, scope, None).with_retry(FAST);
    let mut evaluations = Vec::new();
    let completion = run(&mut lister, auditor(builtins()), |evaluation| {
        evaluations.push(evaluation);
        ControlFlow::Continue(())
    })
    .await;
    (evaluations, completion)
}

fn findings(evaluations: &[Evaluation]) -> Vec<(String, &'static str)> {
    evaluations
        .iter()
        .map(|e| (e.target.name.clone(), e.finding.label()))
        .collect()
}

#[tokio::test]
async fn both_pages_are_audited_following_the_continue_token() {
    let (client, seen) = api_server(vec![
        Reply::Page(vec![compliant("team-a", "good")], "page-2"),
        Reply::Page(vec![lab("team-a", "lab")], ""),
    ]);
    let (evaluations, completion) = audit(client, Scope::Namespace("team-a".into())).await;
    assert!(completion.is_complete(), "{completion:?}");
    assert_eq!((completion.pages, completion.objects), (2, 2));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "/apis/apps/v1/namespaces/team-a/statefulsets?&labelSelector=stsguard.io%2Fignore%21%3Dtrue&limit=500",
            "/apis/apps/v1/namespaces/team-a/statefulsets?&labelSelector=stsguard.io%2Fignore%21%3Dtrue&limit=500&continue=page-2",
        ]
    );
    assert_eq!(
        findings(&evaluations),
        [("good".into(), "compliant"), ("lab".into(), "would-mutate")]
    );
    let Finding::WouldMutate { paths, warnings } = &evaluations[1].finding else {
        unreachable!()
    };
    assert!(
        paths.iter().any(|path| path == "/spec/podManagementPolicy"),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|path| path.contains("readinessProbe")),
        "{paths:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("Parallel")),
        "{warnings:?}"
    );
    let target = &evaluations[1].target;
    assert_eq!((&*target.namespace, &*target.uid), ("team-a", "uid-lab"));
}

#[tokio::test]
async fn a_denied_object_is_would_deny_with_the_message() {
    let (client, _) = api_server(vec![Reply::Page(vec![no_claims("team-a", "scratch")], "")]);
    let (evaluations, completion) = audit(client, Scope::All).await;
    assert!(completion.is_complete());
    let Finding::WouldDeny { message } = &evaluations[0].finding else {
        panic!("{:?}", evaluations[0].finding)
    };
    assert!(
        message.contains("volume-claims") && message.contains("team-a/scratch"),
        "{message}"
    );
}

#[tokio::test]
async fn forbidden_names_the_missing_permission() {
    let (client, seen) = api_server(vec![Reply::Status(
        403,
        "Forbidden",
        r#"statefulsets.apps is forbidden: User "alice" cannot list resource "statefulsets" in API group "apps" in the namespace "team-a""#,
    )]);
    let (evaluations, completion) = audit(client, Scope::Namespace("team-a".into())).await;
    assert!(evaluations.is_empty());
    assert_eq!(seen.lock().unwrap().len(), 1, "a 403 is not retried");
    let error = completion.interrupted.unwrap().to_string();
    assert!(
        error.starts_with(
            r#"the audit may not list statefulsets.apps in namespace "team-a" (403 Forbidden): grant its user `list` on statefulsets.apps in that namespace"#
        ),
        "{error}"
    );
    assert!(error.contains(r#"User "alice" cannot list"#), "{error}");
}

#[tokio::test]
async fn refused_credentials_are_named() {
    let (client, _) = api_server(vec![Reply::Status(401, "Unauthorized", "Unauthorized")]);
    let (_, completion) = audit(client, Scope::All).await;
    let error = completion.interrupted.unwrap().to_string();
    assert!(
        error.starts_with("the API server refused the audit's credentials (401 Unauthorized)"),
        "{error}"
    );
}

#[tokio::test]
async fn a_server_error_is_retried() {
    let (client, seen) = api_server(vec![
        Reply::Status(500, "InternalError", "etcdserver: leader changed"),
        Reply::Refused,
        Reply::Page(vec![compliant("default", "good")], ""),
    ]);
    let (evaluations, completion) = audit(client, Scope::Namespace("default".into())).await;
    assert!(completion.is_complete(), "{completion:?}");
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(findings(&evaluations), [("good".into(), "compliant")]);
}

#[tokio::test]
async fn an_api_server_gone_midway_leaves_the_run_incomplete() {
    let (client, _) = api_server(vec![
        Reply::Page(
            vec![compliant("default", "a"), lab("default", "b")],
            "page-2",
        ),
        Reply::Status(503, "ServiceUnavailable", "the server is shutting down"),
        Reply::Refused,
        Reply::Refused,
    ]);
    let (evaluations, completion) = audit(client, Scope::Namespace("default".into())).await;
    assert!(!completion.is_complete());
    assert_eq!((completion.pages, completion.objects), (1, 2));
    assert_eq!(evaluations.len(), 2);
    let error = completion.interrupted.unwrap().to_string();
    assert!(
        error.starts_with(
            r#"could not list statefulsets.apps in namespace "default": gave up after 3 attempts"#
        ),
        "{error}"
    );
    assert!(error.contains("refused"), "{error}");
}

#[test]
fn a_policy_that_cannot_evaluate_the_object_is_an_error_not_compliant() {
    // failurePolicy ignore: the webhook would allow the object unchanged.
    let yaml = format!(
        "policies:\n  - name: broken\n    module: {}\n    failurePolicy: ignore\n    settings: {{behaviour: error, message: cannot read spec}}\n",
        crate::testing::scripted_policy().display()
    );
    let policies = PolicySet::load(engine(), &Config::parse(&yaml).unwrap()).unwrap();
    let target = Target::from_item(compliant("default", "good"));
    let evaluation = auditor(&policies).evaluate(target, 1);
    let (_, decision) = evaluation.decided.as_ref().unwrap();
    assert!(decision.response.allowed, "the webhook would allow it");
    let Finding::Error { message } = &evaluation.finding else {
        panic!("{:?}", evaluation.finding)
    };
    assert!(
        message.starts_with("policy `broken` failed:") && message.contains("cannot read spec"),
        "{message}"
    );
}

#[test]
fn an_object_that_is_no_statefulset_is_an_error() {
    let target = Target::from_item(json!("not an object"));
    let evaluation = auditor(builtins()).evaluate(target, 1);
    assert!(evaluation.decided.is_none());
    assert_eq!(evaluation.finding.label(), "error");
}

#[test]
fn a_create_carries_no_server_fields() {
    let object = as_created(lab("team-a", "lab"));
    assert_eq!(object["apiVersion"], "apps/v1");
    assert_eq!(object["kind"], "StatefulSet");
    assert!(object.get("status").is_none());
    let metadata = object["metadata"].as_object().unwrap();
    let mut keys: Vec<&str> = metadata.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["labels", "name", "namespace"]);
    assert_eq!(
        object["spec"],
        example(LAB)["spec"],
        "the spec is kept whole"
    );
}

#[test]
fn a_statefulset_a_builtin_cannot_read_is_an_error() {
    let mut object = lab("default", "odd");
    object["spec"]["template"]["spec"]["containers"] = json!("oops");
    let evaluation = auditor(builtins()).evaluate(Target::from_item(object), 1);
    // failurePolicy fail denies it, but no policy judged it: an error, not a denial.
    let (_, decision) = evaluation.decided.as_ref().unwrap();
    assert!(!decision.response.allowed);
    let Finding::Error { message } = &evaluation.finding else {
        panic!("{:?}", evaluation.finding)
    };
    assert!(
        message.starts_with("policy `probes` failed: returned an error: cannot read `object`"),
        "{message}"
    );
}
