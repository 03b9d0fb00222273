//! Reports built from the built-ins' findings, and the apply request against a
//! mock API server (see `crate::audit::tests`).

use serde_json::json;

use super::*;
use crate::audit::tests::{
    FAST, Reply, auditor, builtins, compliant, lab, no_claims, recording_api_server,
};
use crate::audit::{Finding, Target};

fn evaluate(item: Value) -> Evaluation {
    auditor(builtins()).evaluate(Target::from_item(item), 1)
}

fn modules() -> HashMap<String, ModuleIdentity> {
    builtins().modules()
}

const AT: Timestamp = Timestamp {
    seconds: 1_780_000_000,
    nanos: 5,
};

fn outcomes(results: &[ReportResult]) -> Vec<(&str, Outcome)> {
    results
        .iter()
        .map(|result| (&*result.policy, result.result))
        .collect()
}

#[test]
fn a_compliant_object_passes_every_policy_that_ran() {
    let results = results_of(&evaluate(compliant("team-a", "good")), &modules(), AT);
    assert_eq!(
        outcomes(&results),
        [
            ("probes", Outcome::Pass),
            ("parallel", Outcome::Pass),
            ("volume-claims", Outcome::Pass)
        ]
    );
    let result = &results[0];
    assert_eq!(result.source, "stsguard");
    assert_eq!(result.message, "allowed unchanged");
    assert_eq!(result.timestamp, AT);
    assert_eq!(
        result.resources,
        [ObjectReference {
            api_version: "apps/v1",
            kind: "StatefulSet",
            namespace: "team-a".into(),
            name: "good".into(),
            uid: "uid-good".into(),
        }]
    );
    assert_eq!(result.properties["sha256"], modules()["probes"].sha256);
    assert_eq!(result.properties["mode"], "enforce");
    assert!(!result.properties.contains_key("paths"));
}

#[test]
fn a_signed_module_is_named_with_its_signer() {
    let mut modules = modules();
    modules.get_mut("parallel").unwrap().signer = Some("sha256:abc".into());
    let results = results_of(&evaluate(compliant("team-a", "good")), &modules, AT);
    let signers: Vec<Option<&str>> = results
        .iter()
        .map(|result| result.properties.get("signer").map(String::as_str))
        .collect();
    assert_eq!(signers, [None, Some("sha256:abc"), None]);
}

#[test]
fn a_mutation_warns_with_its_paths_and_a_denial_fails() {
    let evaluation = evaluate(lab("team-a", "lab"));
    assert!(matches!(evaluation.finding, Finding::WouldMutate { .. }));
    let results = results_of(&evaluation, &modules(), AT);
    assert_eq!(
        outcomes(&results),
        [
            ("probes", Outcome::Warn),
            ("parallel", Outcome::Warn),
            ("volume-claims", Outcome::Pass)
        ]
    );
    let paths: Vec<String> = serde_json::from_str(&results[1].properties["paths"]).unwrap();
    assert!(
        paths.contains(&"/spec/podManagementPolicy".to_string()),
        "{paths:?}"
    );
    assert!(
        results[1].message.starts_with("would change /spec/")
            && results[1].message.contains("warns: "),
        "{}",
        results[1].message
    );

    let results = results_of(&evaluate(no_claims("team-a", "scratch")), &modules(), AT);
    let denial = results
        .iter()
        .find(|result| result.policy == "volume-claims")
        .unwrap();
    assert_eq!(denial.result, Outcome::Fail);
    assert!(
        denial.message.contains("volumeClaimTemplates"),
        "{}",
        denial.message
    );
}

#[test]
fn an_object_that_cannot_be_evaluated_is_one_error() {
    let mut item = lab("team-a", "odd");
    item["spec"]["template"]["spec"]["containers"] = json!("oops");
    let results = results_of(&evaluate(item), &modules(), AT);
    assert_eq!(results[0].result, Outcome::Error);
    assert!(
        results[0].message.starts_with("failed: "),
        "{}",
        results[0].message
    );
}

#[test]
fn a_report_per_namespace_counts_its_results() {
    let mut reports = Reports::new(modules());
    reports.expect("empty");
    for item in [
        compliant("team-a", "good"),
        lab("team-a", "lab"),
        no_claims("team-b", "scratch"),
    ] {
        reports.add(&evaluate(item));
    }
    let reports = reports.into_reports();
    let namespaces: Vec<&str> = reports.iter().map(PolicyReport::namespace).collect();
    assert_eq!(namespaces, ["empty", "team-a", "team-b"]);
    assert_eq!(
        reports[1].summary,
        Summary {
            pass: 4,
            warn: 2,
            ..Summary::default()
        }
    );
    assert_eq!(reports[2].summary.fail, 1);

    // A namespace with nothing (left) to report: a report with no results.
    let empty = serde_json::to_value(&reports[0]).unwrap();
    assert_eq!(
        empty,
        json!({
            "apiVersion": "wgpolicyk8s.io/v1alpha2",
            "kind": "PolicyReport",
            "metadata": {
                "name": "stsguard-audit",
                "namespace": "empty",
                "labels": {"app.kubernetes.io/managed-by": "stsguard"},
            },
            "summary": {"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0},
            "results": [],
        })
    );
    let team_a = serde_json::to_value(&reports[1]).unwrap();
    let result = &team_a["results"][3];
    assert_eq!(result["result"], "warn");
    assert_eq!(result["resources"][0]["apiVersion"], "apps/v1");
    assert_eq!(result["resources"][0]["uid"], "uid-lab");
    assert!(result["timestamp"]["seconds"].as_i64().unwrap() > 0);
}

fn report() -> PolicyReport {
    let mut reports = Reports::new(modules());
    reports.add(&evaluate(lab("team-a", "lab")));
    reports.into_reports().remove(0)
}

#[tokio::test]
async fn a_report_is_applied_server_side_and_forced() {
    let (client, seen) = recording_api_server(vec![Reply::Object(json!({}))]);
    let report = report();
    Writer::new(client).apply(&report).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, "PATCH");
    assert_eq!(
        request.uri,
        "/apis/wgpolicyk8s.io/v1alpha2/namespaces/team-a/policyreports/stsguard-audit?&force=true&fieldManager=stsguard-audit"
    );
    assert_eq!(request.content_type, "application/apply-patch+yaml");
    assert_eq!(request.body, serde_json::to_value(&report).unwrap());
}

async fn refused(reply: Reply) -> (ReportError, usize) {
    let (client, seen) = recording_api_server(vec![reply]);
    let error = Writer::new(client)
        .with_retry(FAST)
        .apply(&report())
        .await
        .unwrap_err();
    let requests = seen.lock().unwrap().len();
    (error, requests)
}

#[tokio::test]
async fn a_missing_crd_is_named_with_what_to_install() {
    let (error, requests) = refused(Reply::Status(
        404,
        "NotFound",
        "the server could not find the requested resource",
    ))
    .await;
    assert_eq!(requests, 1, "a 404 is not retried");
    assert!(error.applies_to_all());
    assert!(
        error.to_string().starts_with(
            "could not write PolicyReport team-a/stsguard-audit: the PolicyReport CRD (policyreports.wgpolicyk8s.io, version v1alpha2) is not installed: install the chart's crds/"
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("the server could not find the requested resource")
    );
}

#[tokio::test]
async fn a_missing_namespace_is_not_a_missing_crd() {
    let (error, _) = refused(Reply::Status(
        404,
        "NotFound",
        r#"namespaces "team-a" not found"#,
    ))
    .await;
    assert!(matches!(error, ReportError::Failed { .. }), "{error}");
    assert!(!error.applies_to_all());
}

#[tokio::test]
async fn forbidden_names_the_verbs_to_grant() {
    let (error, _) = refused(Reply::Status(
        403,
        "Forbidden",
        r#"policyreports.wgpolicyk8s.io "stsguard-audit" is forbidden: User "alice" cannot patch resource "policyreports""#,
    ))
    .await;
    let message = error.to_string();
    assert!(
        message.starts_with(
            "could not write PolicyReport team-a/stsguard-audit (403 Forbidden): grant the audit's user `get, create, patch, update` on policyreports.wgpolicyk8s.io"
        ) && message.contains(r#"User "alice" cannot patch"#),
        "{message}"
    );
}

#[tokio::test]
async fn a_server_error_is_retried() {
    let (client, seen) = recording_api_server(vec![
        Reply::Status(503, "ServiceUnavailable", "shutting down"),
        Reply::Object(json!({})),
    ]);
    Writer::new(client)
        .with_retry(FAST)
        .apply(&report())
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
}
