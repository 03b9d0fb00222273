//! A policy that reads the whole typed object and sets typed values, end to end
//! through the SDK: nothing the typed view does not know is lost (the values go
//! to the host's copy of the object, never a re-serialized typed object), and
//! values already in place send no mutation.

use stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
use stsguard_policy::k8s_openapi::api::core::v1::{Probe, TCPSocketAction};
use stsguard_policy::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use stsguard_policy::serde_json::{Value, json};
use stsguard_policy::testing;
use stsguard_policy::{Error, Metadata, NoSettings, Policy, Request, Verdict};

/// Sets a label, a spec field, a typed probe in an existing container and
/// appends a container (the whole array, from its JSON, so the first
/// container's unknown fields stay). With `touch-nothing` it sets values that
/// are already there.
struct TypedEditor;

/// The containers as JSON: for appending without losing what they hold.
#[derive(serde::Deserialize)]
struct Containers {
    spec: ContainersSpec,
}

#[derive(serde::Deserialize)]
struct ContainersSpec {
    template: ContainersTemplate,
}

#[derive(serde::Deserialize)]
struct ContainersTemplate {
    spec: ContainersPod,
}

#[derive(serde::Deserialize)]
struct ContainersPod {
    containers: Vec<Value>,
}

impl Policy for TypedEditor {
    const METADATA: Metadata = Metadata {
        name: "typed-editor",
        version: "0.0.0",
        description: "test policy",
        mutating: true,
        settings_schema: "{}",
    };
    type Object = StatefulSet;
    type Settings = NoSettings;

    fn evaluate(request: &Request<StatefulSet>, _: &NoSettings) -> Result<Verdict, Error> {
        let sts: StatefulSet = request.object_view()?;
        if request.annotation("touch-nothing").is_some() {
            let replicas = sts.spec.and_then(|spec| spec.replicas);
            return Verdict::accept().set("/spec/replicas", replicas);
        }
        let mut containers = request
            .object_view::<Containers>()?
            .spec
            .template
            .spec
            .containers;
        containers.push(json!({"name": "helper", "image": "busybox"}));
        let probe = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("http".into()),
                host: None,
            }),
            ..Probe::default()
        };
        Ok(Verdict::accept()
            .set("/metadata/labels/edited", "yes")?
            .set("/spec/minReadySeconds", 10)?
            // In order: the whole array first, then a value inside it.
            .set("/spec/template/spec/containers", containers)?
            .set("/spec/template/spec/containers/0/readinessProbe", probe)?
            .warn("edited"))
    }
}

fn future_fields() -> Value {
    testing::golden_request("future-fields.create")
}

#[test]
fn typed_values_keep_unknown_fields_and_nulls() {
    let request = future_fields();
    let out = testing::evaluate::<TypedEditor>(&request, &json!({})).unwrap();
    let mut expected = request["object"].clone();
    expected["metadata"]["labels"]["edited"] = json!("yes");
    expected["spec"]["minReadySeconds"] = json!(10);
    let containers = expected["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap();
    containers[0]["readinessProbe"] = json!({"tcpSocket": {"port": "http"}});
    containers.push(json!({"name": "helper", "image": "busybox"}));
    assert_eq!(out.mutated_object, Some(expected));
    // Spelled out: the fields a typed round trip would have dropped.
    let mutated = out.mutated_object.unwrap();
    assert!(
        mutated["metadata"]
            .as_object()
            .unwrap()
            .contains_key("creationTimestamp")
    );
    assert!(
        mutated["spec"]["template"]["metadata"]
            .as_object()
            .unwrap()
            .contains_key("creationTimestamp")
    );
    assert!(
        mutated["status"]
            .as_object()
            .unwrap()
            .contains_key("terminatingReplicas")
    );
    assert_eq!(
        mutated["spec"]["futureOrdinalsPolicy"],
        json!({"mode": "Compact"})
    );
    let counter = &mutated["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        counter["restartPolicyRules"][0]["exitCodes"]["values"],
        json!([42])
    );
    assert_eq!(
        counter["ports"][0]["x-future-port-field"],
        json!({"enabled": true})
    );
}

#[test]
fn values_already_in_place_send_nothing() {
    let mut request = future_fields();
    request["object"]["metadata"]["annotations"] = json!({"touch-nothing": "x"});
    let out = testing::evaluate::<TypedEditor>(&request, &json!({})).unwrap();
    assert_eq!((out.allowed, out.mutated_object), (true, None));
}

#[test]
fn a_policy_that_says_it_does_not_mutate_cannot() {
    struct Liar;
    impl Policy for Liar {
        const METADATA: Metadata = Metadata {
            mutating: false,
            ..TypedEditor::METADATA
        };
        type Object = StatefulSet;
        type Settings = NoSettings;
        fn evaluate(request: &Request<StatefulSet>, s: &NoSettings) -> Result<Verdict, Error> {
            TypedEditor::evaluate(request, s)
        }
    }
    let e = testing::evaluate::<Liar>(&future_fields(), &json!({})).unwrap_err();
    // The host's words: the harness applies the host's rule.
    assert_eq!(e, "returned a mutation but declares itself non-mutating");
}

#[test]
fn requests_the_policy_cannot_read_are_errors_not_verdicts() {
    let e = testing::evaluate::<TypedEditor>(&json!({"kind": "oops"}), &json!({})).unwrap_err();
    assert!(e.starts_with("cannot read the AdmissionRequest"), "{e}");
    let mut request = future_fields();
    request["object"]["spec"]["replicas"] = json!("three");
    let e = testing::evaluate::<TypedEditor>(&request, &json!({})).unwrap_err();
    assert!(
        e.starts_with(
            "cannot read `object` as apps/v1 StatefulSet: invalid type: string \"three\""
        ),
        "{e}"
    );
    let e = testing::evaluate::<TypedEditor>(&future_fields(), &json!({"x": 1})).unwrap_err();
    assert!(
        e.starts_with("invalid settings: `x`: unknown field `x`"),
        "{e}"
    );
    // The object arrives apart from the request (WIT `evaluate`); text that is
    // not JSON is an error, not an empty object.
    let mut rest = future_fields();
    rest.as_object_mut().unwrap().remove("object");
    let e = stsguard_policy::runtime::evaluate::<TypedEditor>(
        &rest.to_string(),
        "{\"kind\": ".into(),
        "{}",
    )
    .unwrap_err();
    assert!(e.starts_with("the object is not JSON"), "{e}");
}

#[test]
fn the_request_is_read_into_a_typed_view() {
    struct Reader;
    impl Policy for Reader {
        const METADATA: Metadata = TypedEditor::METADATA;
        type Object = StatefulSet;
        type Settings = NoSettings;
        fn evaluate(request: &Request<StatefulSet>, _: &NoSettings) -> Result<Verdict, Error> {
            let old = request
                .old_object_view::<StatefulSet>()?
                .and_then(|o| o.spec)
                .and_then(|s| s.replicas);
            let sts: StatefulSet = request.object_view()?;
            Ok(Verdict::accept().warn(format!(
                "{:?} {}/{} uid={} user={} dry={} replicas={:?} old={old:?}",
                request.operation(),
                request.namespace(),
                request.name(),
                request.uid(),
                request.username(),
                request.dry_run(),
                sts.spec.and_then(|s| s.replicas),
            )))
        }
    }
    let request = testing::golden_request("lab-statefulset.update-scale");
    let out = testing::evaluate::<Reader>(&request, &json!({})).unwrap();
    assert_eq!(
        out.warnings,
        [
            "Update lab/counter uid=b5e0c1d2-3f4a-4b5c-9d6e-7f8091a2b3c4 user=kubernetes-admin dry=false replicas=Some(5) old=Some(3)"
        ]
    );
}
