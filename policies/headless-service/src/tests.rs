use stsguard_policy::serde_json::{Value, json};
use stsguard_policy::testing::{self, Cluster, Outcome, golden_request as fixture};

use super::*;

/// A Service `counter` in `lab` (the lab fixture's namespace).
fn service(cluster_ip: &str, selector: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "counter", "namespace": "lab"},
        "spec": {"clusterIP": cluster_ip, "selector": selector, "ports": [{"port": 8080}]},
    })
}

fn run_in(cluster: &Cluster, request: &Value, settings: Value) -> Outcome {
    testing::run_in::<HeadlessServicePolicy>(cluster, request, &settings)
}

fn warnings(cluster: Cluster) -> Vec<String> {
    let out = run_in(&cluster, &fixture("lab-statefulset.create"), json!({}));
    assert!(out.allowed);
    assert_eq!(out.mutated_object, None, "the policy never mutates");
    out.warnings
}

#[test]
fn a_headless_service_that_selects_the_pods_is_all_it_wants() {
    let cluster = Cluster::new().with(service("None", json!({"app": "counter"})));
    assert_eq!(warnings(cluster), Vec::<String>::new());
}

#[test]
fn no_service_warns_saying_what_to_create() {
    let warnings = warnings(Cluster::new());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0],
        "spec.serviceName `counter` names no Service in lab: create a headless Service `counter` \
         (clusterIP: None) selecting app=counter, so pods get DNS names like counter-0.counter"
    );
}

#[test]
fn a_service_elsewhere_does_not_count() {
    let mut other = service("None", json!({"app": "counter"}));
    other["metadata"]["namespace"] = json!("other");
    assert_eq!(warnings(Cluster::new().with(other)).len(), 1);
}

#[test]
fn a_cluster_ip_service_is_not_headless() {
    let warnings = warnings(Cluster::new().with(service("10.0.0.17", json!({"app": "counter"}))));
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with("Service `counter` is not headless (clusterIP 10.0.0.17"),
        "{}",
        warnings[0]
    );
}

#[test]
fn a_service_that_selects_other_pods_says_which() {
    let warnings = warnings(Cluster::new().with(service("None", json!({"app": "db"}))));
    assert!(
        warnings[0].contains("selects app=db, which the pod template's labels (app=counter)"),
        "{}",
        warnings[0]
    );
    let more = service("None", json!({"app": "counter", "tier": "db"}));
    assert_eq!(super::tests::warnings(Cluster::new().with(more)).len(), 1);
    let fewer = service("None", json!({}));
    let warnings = super::tests::warnings(Cluster::new().with(fewer));
    assert!(warnings[0].contains("has no selector"), "{}", warnings[0]);
}

#[test]
fn deny_is_a_setting() {
    let out = run_in(
        &Cluster::new(),
        &fixture("lab-statefulset.create"),
        json!({"action": "deny"}),
    );
    assert!(!out.allowed);
    assert!(out.message.unwrap().contains("names no Service in lab"));
    assert!(
        testing::validate_settings::<HeadlessServicePolicy>(&json!({"action": "block"})).is_err()
    );
}

#[test]
fn updates_are_checked_only_when_the_pod_labels_change() {
    let same = fixture("lab-statefulset.update-image");
    assert_eq!(
        run_in(&Cluster::new(), &same, json!({})).warnings,
        Vec::<String>::new()
    );
    let mut relabelled = same.clone();
    relabelled["object"]["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
    let cluster = Cluster::new().with(service("None", json!({"app": "counter"})));
    let out = run_in(&cluster, &relabelled, json!({}));
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].contains("(app=other)"),
        "{}",
        out.warnings[0]
    );
}

#[test]
fn the_skip_annotation_leaves_it_alone_and_a_bad_value_warns() {
    let skipped = testing::annotated(
        fixture("lab-statefulset.create"),
        &[(SKIP_ANNOTATION, "true")],
    );
    assert_eq!(
        run_in(&Cluster::new(), &skipped, json!({})).warnings,
        Vec::<String>::new()
    );
    let bad = testing::annotated(
        fixture("lab-statefulset.create"),
        &[(SKIP_ANNOTATION, "yes")],
    );
    let out = run_in(&Cluster::new(), &bad, json!({}));
    assert!(out.allowed);
    assert!(
        out.warnings[0].contains(SKIP_ANNOTATION),
        "{:?}",
        out.warnings
    );
}

#[test]
fn no_service_name_means_nothing_to_check() {
    let mut request = fixture("lab-statefulset.create");
    request["object"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("serviceName");
    assert_eq!(
        run_in(&Cluster::new(), &request, json!({})).warnings,
        Vec::<String>::new()
    );
}

#[test]
fn it_declares_exactly_services() {
    let metadata = testing::metadata::<HeadlessServicePolicy>();
    assert_eq!(metadata.reads.len(), 1);
    assert_eq!(
        (
            metadata.reads[0].api_version.as_str(),
            metadata.reads[0].kind.as_str()
        ),
        ("v1", "Service")
    );
}
