//! The built-in policies that read the cluster, through a real API server: the
//! webhook's caches watch Services, StorageClasses and PodDisruptionBudgets, and
//! a StatefulSet is checked against what exists. Needs no nodes.

use serde_json::{Value, json};
use stsguard_e2e::admission::Outcome;
use stsguard_e2e::fixtures::{Manifest, bare_statefulset};
use stsguard_e2e::{Scenario, accepts, rejects};

/// A Service `web` for the lab StatefulSet's pods (`app.kubernetes.io/name: web`).
fn service(cluster_ip: Option<&str>) -> Value {
    let mut service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app.kubernetes.io/name": "web"},
                 "ports": [{"name": "http", "port": 8080}]},
    });
    if let Some(ip) = cluster_ip {
        service["spec"]["clusterIP"] = json!(ip);
    }
    service
}

fn warnings_of<'a>(outcome: &'a Outcome, policy: &str) -> Vec<&'a str> {
    match outcome {
        Outcome::Admitted(admitted) => admitted.warnings_of(policy, false),
        Outcome::Denied(_) => Vec::new(),
    }
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn a_statefulset_without_its_service_is_told_what_to_create() -> anyhow::Result<()> {
    let s = Scenario::start("no-service").await?;
    let stored = accepts(s.create(&bare_statefulset())).await?;
    let warnings = stored.warnings_of("headless-service", false);
    assert_eq!(warnings.len(), 1, "{:?}", stored.warnings);
    assert!(
        warnings[0].contains(&format!(
            "spec.serviceName `web` names no Service in {}: create a headless Service `web`",
            s.namespace
        )),
        "{warnings:?}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn a_headless_service_that_selects_the_pods_clears_the_warning() -> anyhow::Result<()> {
    let s = Scenario::start("headless").await?;
    stsguard_e2e::pods::create_service(&s.client(), &s.namespace, service(Some("None"))).await?;
    let outcome = s
        .dry_run_until(&bare_statefulset(), "the warning to go", |o| {
            warnings_of(o, "headless-service").is_empty() && matches!(o, Outcome::Admitted(_))
        })
        .await?;
    assert!(warnings_of(&outcome, "headless-service").is_empty());
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn a_cluster_ip_service_is_not_headless() -> anyhow::Result<()> {
    let s = Scenario::start("cluster-ip").await?;
    stsguard_e2e::pods::create_service(&s.client(), &s.namespace, service(None)).await?;
    let outcome = s
        .dry_run_until(&bare_statefulset(), "the Service to be seen", |o| {
            warnings_of(o, "headless-service")
                .iter()
                .any(|w| w.contains("is not headless"))
        })
        .await?;
    let warnings = warnings_of(&outcome, "headless-service");
    assert!(
        warnings[0].contains("Service `web` is not headless (clusterIP "),
        "{warnings:?}"
    );
    Ok(())
}

/// The lab StatefulSet asking for a StorageClass no cluster has.
fn with_missing_class() -> Value {
    let mut sts = bare_statefulset();
    sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] =
        json!("stsguard-e2e-does-not-exist");
    sts
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn a_missing_storage_class_is_named_with_the_classes_that_exist() -> anyhow::Result<()> {
    let s = Scenario::start("no-class").await?;
    let stored = accepts(s.create(&with_missing_class())).await?;
    let warnings = stored.warnings_of("storage-class", false);
    assert_eq!(warnings.len(), 1, "{:?}", stored.warnings);
    assert!(
        warnings[0].contains(
            "volumeClaimTemplate `data` names StorageClass `stsguard-e2e-does-not-exist`, which \
             does not exist, so its claims stay Pending;"
        ),
        "{warnings:?}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn a_missing_storage_class_is_denied_when_configured() -> anyhow::Result<()> {
    // probes too: its warnings tell the suite the webhook answers (the class alone
    // may have nothing to say about the probe object).
    let config = "requestTimeout: 8s
policies:
  - {name: probes, module: \"builtin:probes\"}
  - name: storage-class
    module: builtin:storage-class
    reads: [{apiVersion: storage.k8s.io/v1, kind: StorageClass}]
    settings: {action: deny}
";
    let Some(s) = Scenario::start_configured("class-deny", config).await? else {
        return Ok(());
    };
    let denial = rejects(s.create(&with_missing_class().named("denied"))).await?;
    assert!(
        denial
            .message
            .contains("policy storage-class denied StatefulSet"),
        "{denial:?}"
    );
    assert!(
        denial
            .message
            .contains("`stsguard-e2e-does-not-exist`, which does not exist"),
        "{denial:?}"
    );
    assert!(s.get("denied").await?.is_none(), "nothing stored");
    Ok(())
}
