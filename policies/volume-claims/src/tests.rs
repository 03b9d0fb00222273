//! The volume-claims policy through the SDK harness, on the fixture
//! AdmissionRequests in `policies/fixtures/golden/*/request.json` and variations.

use stsguard_policy::serde_json::{Value, json};
use stsguard_policy::testing::{self, Outcome};

use super::*;

use testing::golden_request as fixture;

fn run_with(request: &Value, settings: Value) -> Outcome {
    let out = testing::run::<VolumeClaimsPolicy>(request, &settings);
    assert_eq!(out.mutated_object, None, "volume-claims never mutates");
    out
}

fn run(request: &Value) -> Outcome {
    run_with(request, json!({}))
}

fn denial(request: &Value) -> String {
    let out = run(request);
    assert!(!out.allowed, "expected a denial");
    out.message.unwrap()
}

fn claim(request: &mut Value, index: usize) -> &mut Value {
    &mut request["object"]["spec"]["volumeClaimTemplates"][index]
}

#[test]
fn sound_per_pod_storage_passes_silently() {
    for scenario in [
        "lab-statefulset.create",
        "compliant.create",
        "future-fields.create",
        "lab-statefulset.update-scale",
    ] {
        let out = run(&fixture(scenario));
        assert_eq!(
            (out.allowed, out.warnings.len()),
            (true, 0),
            "{scenario}: {:?}",
            out.warnings
        );
    }
}

#[test]
fn no_claim_templates_is_denied_with_the_fix() {
    assert_eq!(
        denial(&fixture("no-claim-templates.create")),
        "StatefulSet has no volumeClaimTemplates; add spec.volumeClaimTemplates so that each pod gets its own PersistentVolumeClaim"
    );
    let mut request = fixture("lab-statefulset.create");
    request["object"]["spec"]["volumeClaimTemplates"] = json!([]);
    assert!(denial(&request).starts_with("StatefulSet has no volumeClaimTemplates"));
}

#[test]
fn a_template_without_a_storage_request_is_denied_naming_it() {
    let mut request = fixture("lab-statefulset.create");
    claim(&mut request, 0)["spec"]["resources"] = json!({"limits": {"storage": "1Gi"}});
    assert_eq!(
        denial(&request),
        "volumeClaimTemplate `visits` has no storage request; add spec.resources.requests.storage, e.g. 1Gi"
    );
}

#[test]
fn a_template_without_access_modes_is_denied_naming_it() {
    let mut request = fixture("lab-statefulset.create");
    claim(&mut request, 0)["spec"]
        .as_object_mut()
        .unwrap()
        .remove("accessModes");
    assert_eq!(
        denial(&request),
        "volumeClaimTemplate `visits` has no access modes; add spec.accessModes, e.g. [ReadWriteOnce]"
    );
}

#[test]
fn an_unmounted_template_is_denied_naming_it() {
    let mut request = fixture("lab-statefulset.create");
    request["object"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] =
        json!("cache");
    request["object"]["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "cache", "emptyDir": {}}]);
    assert_eq!(
        denial(&request),
        "volumeClaimTemplate `visits` is not mounted by any container; add a volumeMount named `visits` or remove the template"
    );
}

#[test]
fn a_mount_in_an_init_container_counts() {
    let mut request = fixture("lab-statefulset.create");
    let pod = &mut request["object"]["spec"]["template"]["spec"];
    let mount = pod["containers"][0]["volumeMounts"].take();
    pod["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("volumeMounts");
    pod["initContainers"] =
        json!([{"name": "seed", "image": "busybox:1.37", "volumeMounts": mount}]);
    assert!(run(&request).allowed);
}

#[test]
fn a_shadowing_pod_volume_is_denied_naming_it() {
    assert_eq!(
        denial(&fixture("shadowed-claim.create")),
        "pod volume `visits` shadows volumeClaimTemplate `visits`, so pods mount it instead of their own claim; remove or rename it in spec.template.spec.volumes"
    );
}

#[test]
fn every_violation_is_in_the_one_denial() {
    let message = denial(&fixture("claim-problems.create"));
    assert_eq!(
        message,
        "3 problems: \
         (1) volumeClaimTemplate `visits` has no storage request; add spec.resources.requests.storage, e.g. 1Gi. \
         (2) volumeClaimTemplate `cache` has no access modes; add spec.accessModes, e.g. [ReadWriteOnce]. \
         (3) volumeClaimTemplate `cache` is not mounted by any container; add a volumeMount named `cache` or remove the template."
    );
}

#[test]
fn warn_only_and_the_skip_annotation_turn_denials_into_warnings() {
    let request = fixture("claim-problems.create");
    let out = run_with(&request, json!({"warnOnly": true}));
    assert!(out.allowed);
    assert_eq!(out.warnings.len(), 3);
    assert!(out.warnings[0].starts_with("volumeClaimTemplate `visits` has no storage request"));

    let mut request = fixture("no-claim-templates.create");
    request["object"]["metadata"]["annotations"] = json!({SKIP_ANNOTATION: "true"});
    let out = run(&request);
    assert!(out.allowed);
    assert_eq!(out.warnings.len(), 1);
}

#[test]
fn a_bad_skip_value_is_reported_with_the_rest() {
    let mut request = fixture("no-claim-templates.create");
    request["object"]["metadata"]["annotations"] = json!({SKIP_ANNOTATION: "please"});
    let message = denial(&request);
    assert!(message.starts_with("2 problems: (1) annotation volume-claims.stsguard.io/skip must be \"true\" or \"false\", not \"please\"."), "{message}");
}

#[test]
fn update_only_warns_and_says_templates_are_immutable() {
    let out = run(&fixture("no-claim-templates.update-scale"));
    assert!(out.allowed);
    assert_eq!(
        out.warnings,
        [
            "StatefulSet has no volumeClaimTemplates; add spec.volumeClaimTemplates so that each pod gets its own PersistentVolumeClaim (templates cannot change after creation: recreate the StatefulSet)"
        ]
    );
    // A shadowing volume lives in the pod template, which an UPDATE can fix.
    let mut request = fixture("lab-statefulset.update-scale");
    request["object"]["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "visits", "emptyDir": {}}]);
    let out = run(&request);
    assert!(out.allowed);
    assert!(
        out.warnings[0].ends_with("remove or rename it in spec.template.spec.volumes"),
        "{}",
        out.warnings[0]
    );
}

#[test]
fn other_kinds_pass_untouched() {
    let out = run(&fixture("deployment.create"));
    assert_eq!((out.allowed, out.warnings.len()), (true, 0));
}

#[test]
fn metadata_and_settings() {
    let m = testing::metadata::<VolumeClaimsPolicy>();
    assert_eq!((m.name.as_str(), m.mutating), ("volume-claims", false));
    let schema: Value = stsguard_policy::serde_json::from_str(&m.settings_schema).unwrap();
    let keys: Vec<_> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, ["warnOnly"]);
    testing::validate_settings::<VolumeClaimsPolicy>(&json!({"warnOnly": true})).unwrap();
    let e =
        testing::validate_settings::<VolumeClaimsPolicy>(&json!({"warnOnly": "yes"})).unwrap_err();
    assert_eq!(
        e,
        "invalid settings: `warnOnly`: invalid type: string \"yes\", expected a boolean"
    );
}
