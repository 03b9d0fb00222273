//! The manifests the scenarios send, from `tests/fixtures/*.yaml` (named by scenario),
//! and small edits to them.

use serde_json::{Value, json};

/// Image of the counter app for scenarios that run pods: `STSGUARD_E2E_COUNTER_IMAGE`,
/// else the chart's default.
pub fn counter_image() -> String {
    std::env::var("STSGUARD_E2E_COUNTER_IMAGE")
        .unwrap_or_else(|_| "ghcr.io/stsguard/counter-app:0.1.0".into())
}

/// Image with `sh`, `wget` used to look pods up by name: `STSGUARD_E2E_TOOLBOX_IMAGE`,
/// else busybox.
pub fn toolbox_image() -> String {
    std::env::var("STSGUARD_E2E_TOOLBOX_IMAGE").unwrap_or_else(|_| "busybox:1.36".into())
}

fn load(name: &str, yaml: &str) -> Value {
    serde_yaml::from_str(yaml).unwrap_or_else(|error| panic!("tests/fixtures/{name}.yaml: {error}"))
}

/// A lab-style StatefulSet `web`: no probes, no podManagementPolicy, a mounted claim.
pub fn bare_statefulset() -> Value {
    load(
        "bare-statefulset",
        include_str!("../fixtures/bare-statefulset.yaml"),
    )
}

/// A StatefulSet `compliant` that already follows every built-in policy.
pub fn compliant_statefulset() -> Value {
    load(
        "compliant-statefulset",
        include_str!("../fixtures/compliant-statefulset.yaml"),
    )
}

/// The headless Service `compliant` of [`compliant_statefulset`].
pub fn compliant_service() -> Value {
    load(
        "compliant-service",
        include_str!("../fixtures/compliant-service.yaml"),
    )
}

/// A StatefulSet `no-claims` that keeps its data on an emptyDir.
pub fn statefulset_without_claims() -> Value {
    load(
        "statefulset-without-claims",
        include_str!("../fixtures/statefulset-without-claims.yaml"),
    )
}

/// The counter app `counter` with `replicas` pods, served by [`counter_headless_service`].
pub fn counter_statefulset(replicas: i32) -> Value {
    let mut sts = load(
        "counter-statefulset",
        include_str!("../fixtures/counter-statefulset.yaml"),
    );
    sts["spec"]["replicas"] = json!(replicas);
    sts["spec"]["template"]["spec"]["containers"][0]["image"] = json!(counter_image());
    sts
}

/// The headless Service `counter-headless` of [`counter_statefulset`].
pub fn counter_headless_service() -> Value {
    load(
        "counter-headless-service",
        include_str!("../fixtures/counter-headless-service.yaml"),
    )
}

/// Edits on a manifest, chained: `bare_statefulset().named("a").labelled("k", "v")`.
pub trait Manifest: Sized {
    fn named(self, name: &str) -> Self;
    fn labelled(self, key: &str, value: &str) -> Self;
    fn annotated(self, key: &str, value: &str) -> Self;
}

impl Manifest for Value {
    fn named(mut self, name: &str) -> Self {
        self["metadata"]["name"] = json!(name);
        self
    }

    fn labelled(mut self, key: &str, value: &str) -> Self {
        self["metadata"]["labels"][key] = json!(value);
        self
    }

    fn annotated(mut self, key: &str, value: &str) -> Self {
        self["metadata"]["annotations"][key] = json!(value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_parse_and_have_the_shape_the_scenarios_rely_on() {
        let bare = bare_statefulset();
        assert_eq!(bare["kind"], "StatefulSet");
        assert!(bare["spec"].get("podManagementPolicy").is_none());
        assert!(
            bare["spec"]["template"]["spec"]["containers"][0]
                .get("readinessProbe")
                .is_none()
        );
        assert_eq!(
            compliant_statefulset()["spec"]["podManagementPolicy"],
            "Parallel"
        );
        assert!(
            statefulset_without_claims()["spec"]
                .get("volumeClaimTemplates")
                .is_none()
        );
        let counter = counter_statefulset(3);
        assert_eq!(counter["spec"]["replicas"], 3);
        assert_eq!(
            counter["spec"]["serviceName"],
            counter_headless_service()["metadata"]["name"]
        );
    }

    #[test]
    fn edits_create_missing_maps() {
        let sts = bare_statefulset()
            .named("other")
            .labelled("stsguard.io/ignore", "true")
            .annotated("parallel.stsguard.io/ordered", "true");
        assert_eq!(sts["metadata"]["name"], "other");
        assert_eq!(sts["metadata"]["labels"]["stsguard.io/ignore"], "true");
        assert_eq!(
            sts["metadata"]["annotations"]["parallel.stsguard.io/ordered"],
            "true"
        );
    }
}
