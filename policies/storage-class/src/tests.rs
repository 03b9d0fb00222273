use stsguard_policy::serde_json::{Value, json};
use stsguard_policy::testing::{self, Cluster, Outcome, golden_request as fixture};

use super::*;

fn class(name: &str, default: bool) -> Value {
    let mut class = json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": "example.com/disk",
    });
    if default {
        class["metadata"]["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: "true"});
    }
    class
}

/// The lab StatefulSet (one template, `visits`, no class named) with `class`.
fn lab(class: Option<&str>) -> Value {
    let mut request = fixture("lab-statefulset.create");
    if let Some(class) = class {
        request["object"]["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] =
            json!(class);
    }
    request
}

fn run_in(cluster: &Cluster, request: &Value, settings: Value) -> Outcome {
    testing::run_in::<StorageClassPolicy>(cluster, request, &settings)
}

fn warnings(cluster: &Cluster, request: &Value) -> Vec<String> {
    let out = run_in(cluster, request, json!({}));
    assert!(out.allowed);
    assert_eq!(out.mutated_object, None, "the policy never mutates");
    out.warnings
}

#[test]
fn a_named_class_that_exists_or_a_default_class_is_all_it_wants() {
    let cluster = Cluster::new()
        .with(class("standard", true))
        .with(class("fast", false));
    assert_eq!(warnings(&cluster, &lab(None)), Vec::<String>::new());
    assert_eq!(warnings(&cluster, &lab(Some("fast"))), Vec::<String>::new());
    assert_eq!(
        warnings(&cluster, &lab(Some(""))),
        Vec::<String>::new(),
        "no class on purpose"
    );
}

#[test]
fn a_class_that_does_not_exist_is_named_with_the_ones_that_do() {
    let cluster = Cluster::new()
        .with(class("standard", true))
        .with(class("fast", false));
    assert_eq!(
        warnings(&cluster, &lab(Some("ssd"))),
        [
            "volumeClaimTemplate `visits` names StorageClass `ssd`, which does not exist, so its \
          claims stay Pending; existing: fast, standard (default)"
        ]
    );
}

#[test]
fn no_class_and_no_default_class_stays_pending() {
    let cluster = Cluster::new().with(class("fast", false));
    assert_eq!(
        warnings(&cluster, &lab(None)),
        [
            "volumeClaimTemplate `visits` names no storageClassName and the cluster has no default \
          StorageClass, so its claims stay Pending; existing: fast"
        ]
    );
    let warnings = warnings(&Cluster::new(), &lab(None));
    assert!(
        warnings[0].ends_with("the cluster has no StorageClass at all"),
        "{warnings:?}"
    );
}

#[test]
fn the_beta_default_annotation_counts() {
    let mut beta = class("old", false);
    beta["metadata"]["annotations"] = json!({BETA_DEFAULT_CLASS_ANNOTATION: "true"});
    assert_eq!(
        warnings(&Cluster::new().with(beta), &lab(None)),
        Vec::<String>::new()
    );
}

#[test]
fn deny_lists_every_template_in_one_message() {
    let mut request = lab(Some("ssd"));
    let second = json!({"metadata": {"name": "logs"}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}});
    request["object"]["spec"]["volumeClaimTemplates"]
        .as_array_mut()
        .unwrap()
        .push(second);
    let out = run_in(&Cluster::new(), &request, json!({"action": "deny"}));
    assert!(!out.allowed);
    let message = out.message.unwrap();
    assert!(
        message.contains("`visits` names StorageClass `ssd`"),
        "{message}"
    );
    assert!(
        message.contains("`logs` names no storageClassName"),
        "{message}"
    );
}

#[test]
fn updates_are_checked_only_when_the_templates_change() {
    let same = fixture("lab-statefulset.update-image");
    assert_eq!(warnings(&Cluster::new(), &same), Vec::<String>::new());
    let mut changed = same.clone();
    changed["object"]["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] = json!("ssd");
    assert_eq!(warnings(&Cluster::new(), &changed).len(), 1);
}

#[test]
fn no_templates_or_the_skip_annotation_mean_nothing_to_check() {
    assert_eq!(
        warnings(&Cluster::new(), &fixture("no-claim-templates.create")),
        Vec::<String>::new()
    );
    let skipped = testing::annotated(lab(Some("ssd")), &[(SKIP_ANNOTATION, "true")]);
    assert_eq!(warnings(&Cluster::new(), &skipped), Vec::<String>::new());
}

#[test]
fn many_classes_are_cut_short_in_the_message() {
    let mut cluster = Cluster::new();
    for n in 0..20 {
        cluster = cluster.with(class(&format!("class-{n:02}"), false));
    }
    let warnings = warnings(&cluster, &lab(Some("ssd")));
    assert!(warnings[0].ends_with(", ..."), "{}", warnings[0]);
    assert!(warnings[0].len() < 230, "fits a warning: {}", warnings[0]);
}
