//! `stsguard audit --write-reports` on the StatefulSets a namespace already has, and
//! the PolicyReport it leaves. Needs no nodes: StatefulSets are only API objects here
//! (replicas: 0). Runs the local `stsguard` binary (`STSGUARD_BIN`).

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::DeleteParams;
use serde_json::json;
use stsguard_e2e::audit::{
    OBJECT_ONLY_POLICIES, WatchingAudit, audit_writing_reports, ensure_policy_report_crd,
    policy_report, report_results,
};
use stsguard_e2e::fixtures::{bare_statefulset, compliant_statefulset};
use stsguard_e2e::scenario::Policies;
use stsguard_e2e::{Scenario, accepts};

/// Makes the lab StatefulSet `web` compliant: probes, and the annotation that keeps
/// OrderedReady (the field itself cannot change).
async fn fix_web(s: &Scenario) -> anyhow::Result<()> {
    let probes = &compliant_statefulset()["spec"]["template"]["spec"]["containers"][0];
    accepts(s.patch(
        "web",
        json!({
            "metadata": {"annotations": {"parallel.stsguard.io/ordered": "true"}},
            "spec": {"template": {"spec": {"containers": [{
                "name": "counter-app",
                "readinessProbe": probes["readinessProbe"],
                "livenessProbe": probes["livenessProbe"],
            }]}}},
        }),
    ))
    .await?;
    Ok(())
}

/// One result of a report: (object, policy, result).
type Row = (&'static str, &'static str, &'static str);
/// The lab StatefulSet `web` as written: probes and parallel would change it.
const WEB_AS_WRITTEN: [Row; 3] = [
    ("web", "parallel", "warn"),
    ("web", "probes", "warn"),
    ("web", "volume-claims", "pass"),
];
/// `web` after [`fix_web`].
const WEB_FIXED: [Row; 3] = [
    ("web", "parallel", "pass"),
    ("web", "probes", "pass"),
    ("web", "volume-claims", "pass"),
];
/// The compliant StatefulSet.
const COMPLIANT: [Row; 3] = [
    ("compliant", "parallel", "pass"),
    ("compliant", "probes", "pass"),
    ("compliant", "volume-claims", "pass"),
];

/// (object, policy, result) of a report, for comparing.
fn results(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|(object, policy, result)| {
            (object.to_string(), policy.to_string(), result.to_string())
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn audit_reports_what_the_policies_would_do_and_forgets_what_is_gone() -> anyhow::Result<()> {
    // Objects stsguard did not see when they were created, like those of a cluster
    // that had them before the webhook was installed.
    let s = Scenario::start_unregistered("audit", Policies::Enforce).await?;
    let client = s.client();
    ensure_policy_report_crd(&client).await?;
    let web = s.create_before_webhook(&bare_statefulset()).await?;
    // With stsguard installed, `web` was created with the opt-out label so that the
    // webhook left it alone; the audit skips opted-out objects as the webhook does, so
    // the label comes off again (an UPDATE that changes nothing stsguard would fix).
    accepts(s.patch("web", json!({}))).await?;
    let compliant = accepts(s.create(&compliant_statefulset())).await?;

    let first = audit_writing_reports(&s.namespace, OBJECT_ONLY_POLICIES)?;
    assert_eq!(
        first.code,
        Some(1),
        "one is not compliant: {}",
        first.stderr
    );
    assert_eq!(first.document["complete"], true);
    let mut findings = first.findings();
    findings.sort();
    assert_eq!(
        findings,
        [
            ("compliant".to_string(), "compliant".to_string()),
            ("web".to_string(), "would-mutate".to_string())
        ]
    );
    let paths = &first.record("web").expect("web is audited")["paths"];
    assert!(
        paths
            .as_array()
            .is_some_and(|paths| paths.contains(&json!("/spec/podManagementPolicy"))),
        "{paths}"
    );

    let report = policy_report(&client, &s.namespace)
        .await?
        .expect("the audit wrote the namespace's PolicyReport");
    assert_eq!(
        report["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "stsguard"
    );
    let mut rows = report_results(&report);
    rows.sort();
    assert_eq!(rows, results(&[COMPLIANT, WEB_AS_WRITTEN].concat()));
    assert_eq!(
        report["summary"],
        json!({"pass": 4, "fail": 0, "warn": 2, "error": 0, "skip": 0})
    );
    for result in report["results"].as_array().unwrap() {
        assert_eq!(result["source"], "stsguard");
        assert_eq!(
            result["properties"]["sha256"].as_str().map(str::len),
            Some(64)
        );
        let object = &result["resources"][0];
        let uid = match object["name"].as_str() {
            Some("web") => web.object.metadata.uid.clone(),
            _ => compliant.object.metadata.uid.clone(),
        };
        assert_eq!(object["uid"].as_str(), uid.as_deref(), "{result}");
        assert_eq!(
            (&object["apiVersion"], &object["kind"]),
            (&json!("apps/v1"), &json!("StatefulSet"))
        );
    }

    // Fix `web` (probes, and the annotation that keeps OrderedReady: the field itself
    // cannot change), delete `compliant`.
    fix_web(&s).await?;
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), &s.namespace);
    statefulsets
        .delete("compliant", &DeleteParams::default())
        .await?;
    for _ in 0..100 {
        if statefulsets.get_opt("compliant").await?.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let second = audit_writing_reports(&s.namespace, OBJECT_ONLY_POLICIES)?;
    assert_eq!(second.code, Some(0), "all compliant now: {}", second.stderr);
    assert_eq!(
        second.findings(),
        [("web".to_string(), "compliant".to_string())]
    );
    let report = policy_report(&client, &s.namespace)
        .await?
        .expect("the report is still there");
    let mut rows = report_results(&report);
    rows.sort();
    assert_eq!(
        rows,
        results(&WEB_FIXED),
        "the deleted object's and the fixed warnings' results are gone"
    );
    assert_eq!(
        report["summary"],
        json!({"pass": 3, "fail": 0, "warn": 0, "error": 0, "skip": 0})
    );
    Ok(())
}

/// Polls the namespace's report until its sorted (object, policy, result) rows are
/// `expected`, for up to 60 s.
async fn report_becomes(
    client: &kube::Client,
    namespace: &str,
    audit: &mut WatchingAudit,
    expected: &[(&str, &str, &str)],
    what: &str,
) -> anyhow::Result<()> {
    let expected = results(expected);
    let mut last = None;
    for _ in 0..240 {
        audit.check_running()?;
        if let Some(report) = policy_report(client, namespace).await? {
            let mut rows = report_results(&report);
            rows.sort();
            if rows == expected {
                return Ok(());
            }
            last = Some(rows);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    anyhow::bail!(
        "{what}: the report did not become {expected:?} within 60 s (last: {last:?}); audit log:\n{}",
        audit.log()
    )
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn the_watching_audit_follows_each_change_within_seconds() -> anyhow::Result<()> {
    let s = Scenario::start_unregistered("audit-watch", Policies::Enforce).await?;
    let client = s.client();
    ensure_policy_report_crd(&client).await?;
    s.create_before_webhook(&bare_statefulset()).await?;
    accepts(s.patch("web", json!({}))).await?;
    let mut audit = WatchingAudit::start(&s.namespace, OBJECT_ONLY_POLICIES)?;
    report_becomes(
        &client,
        &s.namespace,
        &mut audit,
        &WEB_AS_WRITTEN,
        "an existing object that is not compliant",
    )
    .await?;

    // A new object appears in the report, without another run.
    accepts(s.create(&compliant_statefulset())).await?;
    report_becomes(
        &client,
        &s.namespace,
        &mut audit,
        &[COMPLIANT, WEB_AS_WRITTEN].concat(),
        "a created object",
    )
    .await?;

    // Fixed, then deleted: the warnings go, then the object's results.
    fix_web(&s).await?;
    Api::<StatefulSet>::namespaced(client.clone(), &s.namespace)
        .delete("compliant", &DeleteParams::default())
        .await?;
    report_becomes(
        &client,
        &s.namespace,
        &mut audit,
        &WEB_FIXED,
        "a fixed object and a deleted one",
    )
    .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn a_service_created_after_the_statefulset_clears_the_watching_audit_s_finding()
-> anyhow::Result<()> {
    let s = Scenario::start_unregistered("audit-service", Policies::Enforce).await?;
    let client = s.client();
    ensure_policy_report_crd(&client).await?;
    // `web` names serviceName `web`, which does not exist yet.
    s.create_before_webhook(&bare_statefulset()).await?;
    accepts(s.patch("web", json!({}))).await?;
    let config = "policies:
  - name: headless-service
    module: builtin:headless-service
    reads: [{apiVersion: v1, kind: Service}]
";
    let mut audit = WatchingAudit::start(&s.namespace, config)?;
    report_becomes(
        &client,
        &s.namespace,
        &mut audit,
        &[("web", "headless-service", "warn")],
        "a StatefulSet whose Service does not exist",
    )
    .await?;

    // The Service arrives: the StatefulSet is evaluated again, without a change of its own.
    stsguard_e2e::pods::create_service(&client, &s.namespace, headless_service("web", "web"))
        .await?;
    let started = std::time::Instant::now();
    report_becomes(
        &client,
        &s.namespace,
        &mut audit,
        &[("web", "headless-service", "pass")],
        "the StatefulSet once its headless Service exists",
    )
    .await?;
    eprintln!(
        "the finding cleared {:?} after the Service was created",
        started.elapsed()
    );
    Ok(())
}

/// A headless Service `name` selecting `app.kubernetes.io/name: app`.
fn headless_service(name: &str, app: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"clusterIP": "None", "selector": {"app.kubernetes.io/name": app},
                 "ports": [{"name": "http", "port": 8080}]},
    })
}
