//! The default chain — probes, parallel, volume-claims, default settings — run
//! natively on every scenario in `policies/fixtures/golden/`, as the host runs it.
//! The same files drive the host's engine-level golden test, so the wasm build and
//! this native one must agree.
//!
//! `BLESS=1 cargo test -p policy-volume-claims --test golden` rewrites the
//! `expected.json` files; review them in the diff.

use policy_parallel::ParallelPolicy;
use policy_probes::ProbesPolicy;
use policy_volume_claims::VolumeClaimsPolicy;
use stsguard_policy::serde_json::json;
use stsguard_policy::testing::{self, Chain};

fn default_chain() -> Chain {
    Chain::new()
        .policy::<ProbesPolicy>(json!({}))
        .policy::<ParallelPolicy>(json!({}))
        .policy::<VolumeClaimsPolicy>(json!({}))
}

#[test]
fn golden_scenarios() {
    testing::check_golden(testing::GOLDEN_SCENARIOS, &default_chain());
}

#[test]
fn the_lab_statefulset_gets_exactly_probes_and_parallel() {
    let request = testing::golden_request("lab-statefulset.create");
    let outcome = default_chain().run(&request).unwrap();
    assert_eq!(outcome.denial, None);
    let mut expected = request["object"].clone();
    expected["spec"]["podManagementPolicy"] = json!("Parallel");
    let container = &mut expected["spec"]["template"]["spec"]["containers"][0];
    let probe = |delay, period, timeout, failures| {
        json!({"tcpSocket": {"port": "http"}, "initialDelaySeconds": delay, "periodSeconds": period,
               "timeoutSeconds": timeout, "successThreshold": 1, "failureThreshold": failures})
    };
    container["readinessProbe"] = probe(5, 10, 2, 3);
    container["livenessProbe"] = probe(15, 20, 5, 6);
    assert_eq!(outcome.object, expected);
    assert_eq!(
        outcome.warnings,
        [
            "stsguard/probes: added readinessProbe and livenessProbe (tcpSocket on port http) to container `counter`",
            "stsguard/parallel: set spec.podManagementPolicy to Parallel (was OrderedReady) so replicas start and stop together; annotate parallel.stsguard.io/ordered: \"true\" if the app needs ordered start-up",
        ]
    );
    for warning in &outcome.warnings {
        assert!(warning.len() < 256, "{warning}");
    }
}
