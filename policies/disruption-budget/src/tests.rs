use stsguard_policy::serde_json::{Value, json};
use stsguard_policy::testing::{self, Cluster, Outcome, golden_request as fixture};

use super::*;

fn budget(namespace: &str, selector: Value) -> Value {
    json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "counter", "namespace": namespace},
        "spec": {"maxUnavailable": 1, "selector": selector},
    })
}

fn run_in(cluster: &Cluster, request: &Value, settings: Value) -> Outcome {
    testing::run_in::<DisruptionBudgetPolicy>(cluster, request, &settings)
}

fn warnings(cluster: &Cluster, request: &Value) -> Vec<String> {
    let out = run_in(cluster, request, json!({}));
    assert!(out.allowed, "the policy never denies");
    assert_eq!(out.mutated_object, None, "the policy never mutates");
    out.warnings
}

#[test]
fn a_budget_selecting_the_pods_is_all_it_wants() {
    let lab = fixture("lab-statefulset.create");
    for selector in [
        json!({"matchLabels": {"app": "counter"}}),
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["counter", "x"]}]}),
        json!({}),
    ] {
        let cluster = Cluster::new().with(budget("lab", selector.clone()));
        assert_eq!(warnings(&cluster, &lab), Vec::<String>::new(), "{selector}");
    }
}

#[test]
fn no_budget_warns_with_the_command_to_make_one() {
    assert_eq!(
        warnings(&Cluster::new(), &fixture("lab-statefulset.create")),
        [
            "3 replicas and no PodDisruptionBudget selects the pods: one node drain can evict them \
          all at once; e.g. kubectl create pdb counter --selector=app=counter --max-unavailable=1"
        ]
    );
}

#[test]
fn budgets_elsewhere_or_for_other_pods_do_not_count() {
    let lab = fixture("lab-statefulset.create");
    let other_namespace =
        Cluster::new().with(budget("other", json!({"matchLabels": {"app": "counter"}})));
    assert_eq!(warnings(&other_namespace, &lab).len(), 1);
    let other_pods = Cluster::new().with(budget("lab", json!({"matchLabels": {"app": "db"}})));
    assert_eq!(warnings(&other_pods, &lab).len(), 1);
    let mut null_selector = budget("lab", json!(null));
    null_selector["spec"]
        .as_object_mut()
        .unwrap()
        .remove("selector");
    assert_eq!(
        warnings(&Cluster::new().with(null_selector), &lab).len(),
        1,
        "null selects none"
    );
}

#[test]
fn one_replica_or_fewer_than_min_replicas_needs_none() {
    let mut one = fixture("lab-statefulset.create");
    one["object"]["spec"]["replicas"] = json!(1);
    assert_eq!(warnings(&Cluster::new(), &one), Vec::<String>::new());
    let three = fixture("lab-statefulset.create");
    let out = run_in(&Cluster::new(), &three, json!({"minReplicas": 5}));
    assert_eq!(out.warnings, Vec::<String>::new());
    assert!(
        testing::validate_settings::<DisruptionBudgetPolicy>(&json!({"minReplicas": 1})).is_err()
    );
}

#[test]
fn updates_are_checked_when_scaling_up_or_relabelling() {
    let same = fixture("lab-statefulset.update-image");
    assert_eq!(
        warnings(&Cluster::new(), &same),
        Vec::<String>::new(),
        "nothing relevant changed"
    );
    let mut scaled_up = same.clone();
    scaled_up["oldObject"]["spec"]["replicas"] = json!(1);
    assert_eq!(warnings(&Cluster::new(), &scaled_up).len(), 1);
}

#[test]
fn the_skip_annotation_leaves_it_alone() {
    let skipped = testing::annotated(
        fixture("lab-statefulset.create"),
        &[(SKIP_ANNOTATION, "true")],
    );
    assert_eq!(warnings(&Cluster::new(), &skipped), Vec::<String>::new());
}
