//! Policies that read the cluster (contract 0.3), through the real engine with
//! the reader test policy (`policies/testing/reader`): what is granted, what a
//! read answers, and what a read that has no answer does to the review.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stsguard_contract::cluster::{ReadError, ResourceKind, Selector};

use super::*;
use crate::cluster::Offline;
use crate::config::Config;
use crate::engine::ClusterReader;
use crate::review::{self, ReviewRequest};
use crate::testing::engine;

/// The reader policy granted what it declares, reading `settings`.
fn reader_config(settings: Value, extra: &str) -> String {
    format!(
        "policies:
  - name: reader
    module: {module}
    failurePolicy: ignore
    reads:
      - {{apiVersion: v1, kind: Service}}
      - {{apiVersion: storage.k8s.io/v1, kind: StorageClass}}
      - {{apiVersion: policy/v1, kind: PodDisruptionBudget}}
      - {{apiVersion: v1, kind: ConfigMap}}
      - {{apiVersion: e2e.stsguard.io/v1, kind: Widget}}
    settings: {settings}
{extra}",
        module = crate::testing::reader_policy().display(),
    )
}

fn load(yaml: &str, reader: Option<Arc<dyn ClusterReader>>) -> Result<PolicySet, LoadError> {
    let config = Config::parse(yaml).unwrap();
    PolicySet::load_pulled(
        engine(),
        &config,
        &crate::registry::Pulled::default(),
        reader.as_ref(),
    )
}

fn review() -> ReviewRequest {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "uid-1",
            "kind": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
            "operation": "CREATE",
            "namespace": "default",
            "name": "web",
            "object": {"apiVersion": "apps/v1", "kind": "StatefulSet",
                       "metadata": {"name": "web", "namespace": "default"}, "spec": {}},
        },
    });
    review::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
}

/// What the reader policy said: its one warning.
fn read(settings: Value, cluster: Arc<dyn ClusterReader>) -> Vec<String> {
    let set = load(&reader_config(settings, ""), Some(cluster)).unwrap();
    let outcome = set.evaluate(
        &mut review(),
        Selection::All,
        Instant::now() + Duration::from_secs(10),
    );
    assert_eq!(outcome.denial, None);
    outcome.warnings
}

fn objects() -> Arc<dyn ClusterReader> {
    let service = |ns: &str, name: &str, app: &str| {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": ns, "labels": {"app": app},
                            "resourceVersion": "7"}})
    };
    Offline::from_objects([
        service("default", "web", "web"),
        service("default", "db", "db"),
        service("other", "web", "web"),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
               "metadata": {"name": "fast"}}),
    ])
    .unwrap()
    .reader()
}

#[test]
fn a_policy_reads_what_it_is_granted_from_the_host() {
    let get = |ns: &str, name: &str| {
        read(
            json!({"read": "get", "apiVersion": "v1", "kind": "Service", "namespace": ns, "name": name}),
            objects(),
        )
    };
    assert_eq!(
        get("default", "web"),
        ["stsguard/reader: get Service default/web: found 7"]
    );
    assert_eq!(
        get("default", "nothing"),
        ["stsguard/reader: get Service default/nothing: none"]
    );
    let list = |namespace: Value, selector: &str| {
        read(
            json!({"read": "list", "apiVersion": "v1", "kind": "Service", "namespace": namespace,
                   "selector": selector}),
            objects(),
        )
    };
    assert_eq!(
        list(json!("default"), ""),
        ["stsguard/reader: list Service: 2 objects: default/db,default/web"]
    );
    assert_eq!(
        list(Value::Null, "app=web"),
        ["stsguard/reader: list Service: 2 objects: default/web,other/web"]
    );
    let classes = read(
        json!({"read": "list", "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass"}),
        objects(),
    );
    assert_eq!(
        classes,
        ["stsguard/reader: list StorageClass: 1 objects: fast"]
    );
}

#[test]
fn a_read_the_host_refuses_names_why() {
    let refused = |settings: Value| read(settings, objects()).join("\n");
    let secret = refused(json!({"read": "get", "apiVersion": "v1", "kind": "Secret",
                                "namespace": "default", "name": "x", "report": true}));
    assert!(secret.contains("refused not_granted"), "{secret}");
    assert!(
        secret.contains("v1 Secret, which its metadata does not declare"),
        "{secret}"
    );
    let scoped = refused(json!({"read": "get", "apiVersion": "storage.k8s.io/v1",
                                "kind": "StorageClass", "namespace": "default", "name": "fast",
                                "report": true}));
    assert!(
        scoped.contains("refused invalid") && scoped.contains("cluster-scoped"),
        "{scoped}"
    );
    let selector = refused(
        json!({"read": "list", "apiVersion": "v1", "kind": "Service",
                                  "selector": "app in (web", "report": true}),
    );
    assert!(
        selector.contains("refused invalid: label selector"),
        "{selector}"
    );
}

#[test]
fn a_list_larger_than_the_policy_may_take_is_too_large_not_a_crash() {
    // 2,000 ConfigMaps of 2 KiB: 4 MiB of JSON, over a quarter of 8 MiB.
    let padding = "x".repeat(2048);
    let maps = (0..2000).map(|n| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": format!("map-{n}"), "namespace": "default"},
               "data": {"padding": padding}})
    });
    let cluster = Offline::from_objects(maps).unwrap().reader();
    let yaml = reader_config(
        json!({"read": "list", "apiVersion": "v1", "kind": "ConfigMap", "report": true}),
        "",
    )
    .replace(
        "failurePolicy: ignore",
        "failurePolicy: ignore\n    memoryLimit: 8Mi",
    );
    let set = load(&yaml, Some(cluster)).unwrap();
    let outcome = set.evaluate(
        &mut review(),
        Selection::All,
        Instant::now() + Duration::from_secs(10),
    );
    let warning = outcome.warnings.join("\n");
    assert!(warning.contains("refused too_large"), "{warning}");
    assert!(warning.contains("2000 objects"), "{warning}");
}

/// Every read fails as not synced.
struct Unsynced;

impl ClusterReader for Unsynced {
    fn get(
        &self,
        kind: &ResourceKind,
        _: Option<&str>,
        _: &str,
    ) -> Result<Option<Arc<str>>, ReadError> {
        Err(ReadError::NotSynced(format!(
            "{kind} is not synced in stsguard's cache: testing"
        )))
    }

    fn list(
        &self,
        kind: &ResourceKind,
        _: Option<&str>,
        _: &Selector,
        _: usize,
    ) -> Result<String, ReadError> {
        Err(ReadError::NotSynced(format!(
            "{kind} is not synced in stsguard's cache: testing"
        )))
    }
}

#[test]
fn an_unsynced_kind_fails_the_evaluation_and_the_failure_policy_decides() {
    let settings = json!({"read": "get", "apiVersion": "v1", "kind": "Service",
                          "namespace": "default", "name": "web"});
    let ignored = read(settings.clone(), Arc::new(Unsynced)).join("\n");
    // Skipped with a warning; what the read said is in the log.
    assert!(
        ignored.contains("could not evaluate") && ignored.contains("skipped"),
        "{ignored}"
    );
    let yaml = reader_config(settings, "").replace("failurePolicy: ignore", "failurePolicy: fail");
    let set = load(&yaml, Some(Arc::new(Unsynced))).unwrap();
    let outcome = set.evaluate(
        &mut review(),
        Selection::All,
        Instant::now() + Duration::from_secs(10),
    );
    let denial = outcome.denial.expect("failurePolicy fail denies");
    assert!(
        denial.message.contains("failurePolicy is fail"),
        "{denial:?}"
    );
    // What the read said is the run's error (and the log's).
    let runs = format!("{:?}", outcome.runs);
    assert!(runs.contains("v1 Service is not synced"), "{runs}");
}

#[test]
fn a_policy_is_loaded_only_with_every_kind_it_reads_granted() {
    let settings = json!({"read": "get", "apiVersion": "v1", "kind": "Service", "name": "x"});
    let partial = reader_config(settings.clone(), "")
        .replace("      - {apiVersion: v1, kind: ConfigMap}\n", "");
    let error = load(&partial, Some(objects())).unwrap_err().to_string();
    assert!(
        error.contains("reads v1 ConfigMap, which the configuration does not grant it"),
        "{error}"
    );
    assert!(
        error.contains(
            "`reads: [{apiVersion: v1, kind: Service}, {apiVersion: storage.k8s.io/v1, kind: \
             StorageClass}, {apiVersion: policy/v1, kind: PodDisruptionBudget}, {apiVersion: v1, \
             kind: ConfigMap}, {apiVersion: e2e.stsguard.io/v1, kind: Widget}]`"
        ),
        "the line to add: {error}"
    );
    let error = load(&reader_config(settings, ""), None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("there is no cluster to read from"),
        "{error}"
    );
}

#[test]
fn a_0_2_component_loads_and_runs_as_before() {
    let yaml = format!(
        "policies: [{{name: old, module: {}, settings: {{behaviour: label, key: a, value: b}}}}]",
        crate::testing::scripted_policy().display()
    );
    let set = load(&yaml, None).unwrap();
    assert_eq!(set.policies()[0].module().contract_version(), "0.2.0");
    assert!(set.policies()[0].metadata().reads.is_empty());
    assert!(set.kinds_read().is_empty());
    let mut review = review();
    let outcome = set.evaluate(
        &mut review,
        Selection::All,
        Instant::now() + Duration::from_secs(10),
    );
    assert_eq!(review.object["metadata"]["labels"], json!({"a": "b"}));
    assert_eq!(outcome.warnings, ["stsguard/old: set label a=b"]);
}

#[test]
fn the_built_ins_declare_what_the_default_chain_grants_them() {
    for name in crate::builtin::names() {
        let module = engine()
            .load(crate::builtin::module(name).unwrap())
            .unwrap();
        assert_eq!(
            module.metadata().reads,
            crate::builtin::reads(name),
            "{name}"
        );
        assert_eq!(module.contract_version(), "0.3.0", "{name}");
    }
}
