//! `builtin:parallel`: a new StatefulSet starts and stops its pods in parallel.
//!
//! The API server defaults `spec.podManagementPolicy` to `OrderedReady`: pod N+1 is
//! created only once pod N is Ready, so scaling from 0 to 3 takes three start-up
//! times, and one stuck pod blocks the rest. Most stateful apps (every replica with
//! its own volume, no start-up order between them) want `Parallel`.
//!
//! - CREATE: `OrderedReady` (or unset) becomes `Parallel`, with a warning, unless the
//!   annotation `parallel.stsguard.io/ordered: "true"` says the app needs ordered
//!   start-up.
//! - UPDATE: the field is immutable after creation, so it is never changed; a
//!   warning says how to get `Parallel` (recreate) or silence the hint (annotate).
//! - `parallel.stsguard.io/skip: "true"` leaves the object alone. An annotation
//!   value other than `"true"`/`"false"` is denied on CREATE and a warning on UPDATE.
//!
//! The policy takes no settings.

use serde::Deserialize;
use stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
use stsguard_policy::{Error, Metadata, NoSettings, Operation, Policy, Request, Verdict};

/// `"true"`: the app needs ordered start-up; keep `OrderedReady`.
pub const ORDERED_ANNOTATION: &str = "parallel.stsguard.io/ordered";
/// `"true"`: the policy leaves the object alone.
pub const SKIP_ANNOTATION: &str = "parallel.stsguard.io/skip";

const PARALLEL: &str = "Parallel";
const ORDERED_READY: &str = "OrderedReady";

/// The policy; see the crate documentation.
pub struct ParallelPolicy;

impl Policy for ParallelPolicy {
    const METADATA: Metadata = Metadata {
        name: "parallel",
        version: env!("CARGO_PKG_VERSION"),
        description: "Sets spec.podManagementPolicy: Parallel on new StatefulSets, so replicas \
                      start and stop together, unless the annotation \
                      parallel.stsguard.io/ordered: \"true\" asks for ordered start-up.",
        mutating: true,
        settings_schema: include_str!("../settings.schema.json"),
    };
    type Object = StatefulSet;
    type Settings = NoSettings;

    fn evaluate(request: &Request<StatefulSet>, _settings: &NoSettings) -> Result<Verdict, Error> {
        let (skip, ordered) = match (
            request.flag_annotation(SKIP_ANNOTATION),
            request.flag_annotation(ORDERED_ANNOTATION),
        ) {
            (Ok(skip), Ok(ordered)) => (skip, ordered),
            (skip, ordered) => {
                let problems = [skip.err(), ordered.err()].into_iter().flatten();
                return Ok(match request.operation() {
                    Operation::Create => Verdict::reject(problems.collect::<Vec<_>>().join("; ")),
                    _ => Verdict::accept().warn_all(problems),
                });
            }
        };
        // k8s-openapi's `v1_33` types keep `spec` optional; the API server never
        // sends a StatefulSet without one.
        let view = request.object_view::<View>()?;
        let Some(spec) = view.spec else {
            return Ok(Verdict::accept());
        };
        let current = spec.pod_management_policy.as_deref();
        // Only the Kubernetes default is ours to change; `Parallel` is the goal
        // and any other value is a choice we do not second-guess.
        if skip || ordered || !matches!(current, None | Some(ORDERED_READY)) {
            return Ok(Verdict::accept());
        }
        Ok(match request.operation() {
            Operation::Create => {
                // A JSON edit, not a typed one: one field, no re-serialization.
                Verdict::accept()
                    .set("/spec/podManagementPolicy", PARALLEL)?
                    .warn(format!(
                        "set spec.podManagementPolicy to Parallel (was {}) so replicas start and \
                     stop together; annotate {ORDERED_ANNOTATION}: \"true\" if the app needs \
                     ordered start-up",
                        current.unwrap_or("unset, i.e. OrderedReady")
                    ))
            }
            _ => Verdict::accept().warn(format!(
                "spec.podManagementPolicy is OrderedReady and cannot change after creation; \
                 recreate the StatefulSet to start replicas in parallel, or annotate \
                 {ORDERED_ANNOTATION}: \"true\" to keep it"
            )),
        })
    }
}

stsguard_policy::export_policy!(ParallelPolicy);

/// The one field the policy reads, straight from the request JSON (see
/// [`Request::object_view`]).
#[derive(Deserialize)]
struct View {
    spec: Option<SpecView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecView {
    pod_management_policy: Option<String>,
}

#[cfg(test)]
mod tests {
    use stsguard_policy::serde_json::{Value, json};
    use stsguard_policy::testing::{self, Outcome};

    use super::*;

    use testing::golden_request as fixture;

    fn annotated(request: Value, key: &str, value: &str) -> Value {
        testing::annotated(request, &[(key, value)])
    }

    fn run(request: &Value) -> Outcome {
        testing::run::<ParallelPolicy>(request, &json!({}))
    }

    /// The request's object with only `podManagementPolicy` changed.
    fn with_policy(request: &Value, policy: &str) -> Value {
        let mut object = request["object"].clone();
        object["spec"]["podManagementPolicy"] = json!(policy);
        object
    }

    #[test]
    fn create_switches_ordered_ready_to_parallel_and_says_so() {
        let request = fixture("lab-statefulset.create");
        let out = run(&request);
        assert!(out.allowed);
        assert_eq!(out.mutated_object, Some(with_policy(&request, "Parallel")));
        assert_eq!(out.warnings.len(), 1);
        assert!(
            out.warnings[0]
                .starts_with("set spec.podManagementPolicy to Parallel (was OrderedReady)"),
            "{}",
            out.warnings[0]
        );
        assert!(out.warnings[0].contains(ORDERED_ANNOTATION));
    }

    #[test]
    fn fields_unknown_to_k8s_openapi_and_nulls_survive() {
        let request = fixture("future-fields.create");
        let out = run(&request);
        let mutated = out.mutated_object.expect("mutated");
        assert_eq!(mutated, with_policy(&request, "Parallel"));
        assert_eq!(mutated["metadata"]["creationTimestamp"], Value::Null);
        assert!(
            mutated["metadata"]
                .as_object()
                .unwrap()
                .contains_key("creationTimestamp")
        );
        assert_eq!(
            mutated["spec"]["futureOrdinalsPolicy"],
            json!({"mode": "Compact"})
        );
        assert_eq!(
            mutated["spec"]["template"]["spec"]["hostnameOverride"],
            "counter"
        );
    }

    #[test]
    fn an_unset_field_is_set_too() {
        let mut request = fixture("lab-statefulset.create");
        request["object"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("podManagementPolicy");
        let out = run(&request);
        assert_eq!(out.mutated_object, Some(with_policy(&request, "Parallel")));
        assert!(
            out.warnings[0].contains("(was unset, i.e. OrderedReady)"),
            "{}",
            out.warnings[0]
        );
    }

    #[test]
    fn parallel_already_means_no_patch_and_no_warning() {
        let out = run(&fixture("compliant.create"));
        assert_eq!(
            out,
            Outcome {
                allowed: true,
                message: None,
                warnings: vec![],
                mutated_object: None
            }
        );
    }

    #[test]
    fn idempotent_on_its_own_output() {
        let request = fixture("lab-statefulset.create");
        let first = run(&request).mutated_object.unwrap();
        let again = run(&testing::with_object(&request, first));
        assert_eq!((again.mutated_object, again.warnings.len()), (None, 0));
    }

    #[test]
    fn the_ordered_annotation_keeps_ordered_ready() {
        let out = run(&fixture("ordered-annotation.create"));
        assert_eq!(
            (out.allowed, out.mutated_object, out.warnings.len()),
            (true, None, 0)
        );
        let out = run(&annotated(
            fixture("lab-statefulset.create"),
            ORDERED_ANNOTATION,
            "false",
        ));
        assert!(out.mutated_object.is_some());
    }

    #[test]
    fn the_skip_annotation_leaves_the_object_alone() {
        let out = run(&annotated(
            fixture("lab-statefulset.create"),
            SKIP_ANNOTATION,
            "true",
        ));
        assert_eq!(
            (out.allowed, out.mutated_object, out.warnings.len()),
            (true, None, 0)
        );
    }

    #[test]
    fn a_bad_annotation_value_is_denied_on_create_and_a_warning_on_update() {
        let out = run(&annotated(
            fixture("lab-statefulset.create"),
            ORDERED_ANNOTATION,
            "yes",
        ));
        assert!(!out.allowed);
        assert_eq!(
            out.message.as_deref(),
            Some(
                "annotation parallel.stsguard.io/ordered must be \"true\" or \"false\", not \"yes\""
            )
        );
        let out = run(&annotated(
            fixture("lab-statefulset.update-scale"),
            SKIP_ANNOTATION,
            "1",
        ));
        assert!(out.allowed);
        assert_eq!(out.mutated_object, None);
        assert_eq!(
            out.warnings,
            ["annotation parallel.stsguard.io/skip must be \"true\" or \"false\", not \"1\""]
        );
    }

    #[test]
    fn update_never_touches_the_field_but_hints_once() {
        for scenario in [
            "lab-statefulset.update-scale",
            "lab-statefulset.update-image",
        ] {
            let out = run(&fixture(scenario));
            assert!(out.allowed, "{scenario}");
            assert_eq!(out.mutated_object, None, "{scenario}");
            assert_eq!(out.warnings.len(), 1, "{scenario}");
            assert!(
                out.warnings[0].contains("cannot change after creation"),
                "{}",
                out.warnings[0]
            );
        }
        let mut request = fixture("lab-statefulset.update-scale");
        request["object"]["spec"]["podManagementPolicy"] = json!("Parallel");
        request["oldObject"]["spec"]["podManagementPolicy"] = json!("Parallel");
        assert_eq!(run(&request).warnings.len(), 0);
    }

    #[test]
    fn a_value_we_do_not_know_is_not_second_guessed() {
        let mut request = fixture("lab-statefulset.create");
        request["object"]["spec"]["podManagementPolicy"] = json!("Burst");
        let out = run(&request);
        assert_eq!((out.mutated_object, out.warnings.len()), (None, 0));
    }

    #[test]
    fn other_kinds_and_operations_pass_untouched() {
        let out = run(&fixture("deployment.create"));
        assert_eq!(
            (out.allowed, out.mutated_object, out.warnings.len()),
            (true, None, 0)
        );
        let mut delete = fixture("lab-statefulset.update-scale");
        delete["operation"] = json!("DELETE");
        delete["object"] = Value::Null;
        let out = run(&delete);
        assert_eq!(
            (out.allowed, out.mutated_object, out.warnings.len()),
            (true, None, 0)
        );
    }

    #[test]
    fn metadata_and_settings() {
        let m = testing::metadata::<ParallelPolicy>();
        assert_eq!((m.name.as_str(), m.mutating), ("parallel", true));
        assert_eq!(
            (
                m.targets[0].group.as_str(),
                m.targets[0].version.as_str(),
                m.targets[0].kind.as_str()
            ),
            ("apps", "v1", "StatefulSet")
        );
        let schema: Value = stsguard_policy::serde_json::from_str(&m.settings_schema).unwrap();
        assert_eq!(schema["additionalProperties"], false);
        assert!(testing::validate_settings::<ParallelPolicy>(&json!({})).is_ok());
        let e =
            testing::validate_settings::<ParallelPolicy>(&json!({"ordered": true})).unwrap_err();
        assert!(e.contains("unknown field `ordered`"), "{e}");
    }
}
