//! The report and the exit code, against a mock API server (see
//! `crate::audit::tests`) and the built-in policies.

use serde_json::Value;

use super::*;
use crate::audit::tests::{
    FAST, Reply, Seen, api_server, auditor, builtins, compliant, lab, no_claims,
    recording_api_server,
};

/// The audit of namespace `team-a` on an API server answering `replies`: the
/// verdict (or error) and what was printed.
async fn audit(replies: Vec<Reply>, output: Output) -> (anyhow::Result<Verdict>, String) {
    let (client, _) = api_server(replies);
    let lister = Lister::new(client, Scope::Namespace("team-a".into()), None).with_retry(FAST);
    let mut out = Vec::new();
    let verdict = report(lister, auditor(builtins()), output, None, &mut out).await;
    (verdict, String::from_utf8(out).unwrap())
}

fn three_kinds() -> Vec<Reply> {
    vec![
        Reply::Page(
            vec![compliant("team-a", "good"), lab("team-a", "lab")],
            "page-2",
        ),
        Reply::Page(vec![no_claims("team-a", "scratch")], ""),
    ]
}

#[tokio::test]
async fn the_table_has_a_row_per_object_and_a_summary() {
    let (verdict, table) = audit(three_kinds(), Output::Table).await;
    assert_eq!(verdict.unwrap(), Verdict::NotCompliant, "exit 1");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("NAMESPACE") && lines[0].ends_with("POLICIES/DETAIL"));
    let columns = |line: &str| {
        line.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(columns(lines[1]), "team-a good compliant");
    assert!(
        lines[1].ends_with("probes, parallel, volume-claims"),
        "{}",
        lines[1]
    );
    assert_eq!(columns(lines[2]), "team-a lab would-mutate");
    assert!(
        lines[2].contains("probes, parallel: ") && lines[2].contains("/spec/podManagementPolicy"),
        "{}",
        lines[2]
    );
    assert_eq!(columns(lines[3]), "team-a scratch would-deny");
    assert!(
        lines[3].contains("has no volumeClaimTemplates"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].starts_with("3 StatefulSets in ")
            && lines[4].contains(
                ": 1 compliant, 1 would-mutate, 1 would-deny, 0 error; policies: probes (sha256 "
            ),
        "{}",
        lines[4]
    );
    assert!(!table.contains("INCOMPLETE"));
}

#[tokio::test]
async fn json_is_one_document_with_the_decisions_and_digests() {
    let (verdict, text) = audit(three_kinds(), Output::Json).await;
    assert_eq!(verdict.unwrap(), Verdict::NotCompliant);
    let document: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(document["complete"], true);
    assert!(document.get("error").is_none());
    let summary = &document["summary"];
    assert_eq!(
        [
            &summary["objects"],
            &summary["compliant"],
            &summary["wouldMutate"],
            &summary["wouldDeny"],
            &summary["error"]
        ],
        [3, 1, 1, 1, 0].map(Value::from).each_ref()
    );
    let chain = document["policies"].as_array().unwrap();
    assert_eq!(chain.len(), 3);
    let digest = chain[0]["sha256"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert_eq!(chain[0]["module"], "builtin:probes");

    let results = document["results"].as_array().unwrap();
    let lab = &results[1];
    assert_eq!(
        [&lab["namespace"], &lab["name"], &lab["uid"], &lab["result"]],
        ["team-a", "lab", "uid-lab", "would-mutate"]
            .map(Value::from)
            .each_ref()
    );
    assert_eq!(lab["operation"], "CREATE");
    assert!(
        lab["paths"]
            .as_array()
            .unwrap()
            .contains(&"/spec/podManagementPolicy".into())
    );
    assert!(!lab["patch"].as_array().unwrap().is_empty());
    assert!(!lab["warnings"].as_array().unwrap().is_empty());
    assert!(
        lab.get("mutated").is_none(),
        "the patch says what would change"
    );
    assert_eq!(lab["policies"][0]["name"], "probes");
    assert_eq!(lab["policies"][0]["result"], "mutated");
    assert_eq!(lab["policies"][0]["sha256"], digest);
    let scratch = &results[2];
    assert_eq!(scratch["result"], "would-deny");
    assert!(
        scratch["detail"]
            .as_str()
            .unwrap()
            .contains("volumeClaimTemplates")
    );
    assert_eq!(scratch["allowed"], false);
}

#[tokio::test]
async fn yaml_is_the_same_document() {
    let (verdict, text) = audit(three_kinds(), Output::Yaml).await;
    assert_eq!(verdict.unwrap(), Verdict::NotCompliant);
    let document: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(document["complete"], true);
    assert_eq!(document["summary"]["objects"], 3);
    let results: Vec<&Value> = document["results"].as_array().unwrap().iter().collect();
    assert_eq!(
        results
            .iter()
            .map(|r| r["result"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["compliant", "would-mutate", "would-deny"]
    );
}

#[tokio::test]
async fn every_object_compliant_exits_0_and_an_empty_namespace_too() {
    let (verdict, _) = audit(
        vec![Reply::Page(vec![compliant("team-a", "good")], "")],
        Output::Table,
    )
    .await;
    assert_eq!(verdict.unwrap(), Verdict::Compliant);
    for output in [Output::Json, Output::Yaml] {
        let (verdict, text) = audit(vec![Reply::Page(vec![], "")], output).await;
        assert_eq!(verdict.unwrap(), Verdict::Compliant);
        let document: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(document["results"], Value::Array(vec![]), "{text}");
        assert_eq!(document["complete"], true);
    }
}

#[tokio::test]
async fn an_api_server_gone_midway_is_reported_incomplete() {
    let gone_after_one_page = || {
        vec![
            Reply::Page(vec![compliant("team-a", "good")], "page-2"),
            Reply::Refused,
            Reply::Status(503, "ServiceUnavailable", "shutting down"),
            Reply::Refused,
        ]
    };
    let (verdict, table) = audit(gone_after_one_page(), Output::Table).await;
    assert_eq!(verdict.unwrap(), Verdict::Incomplete, "exit 2");
    assert_eq!(Verdict::Incomplete.exit_code(), ExitCode::from(2));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[1].starts_with("team-a"), "what it has is printed");
    assert!(
        lines[2].starts_with(
            "INCOMPLETE: the audit stopped after 1 StatefulSets, the list was not read to its end: could not list statefulsets.apps in namespace \"team-a\": gave up after 3 attempts"
        ),
        "{table}"
    );
    assert!(
        lines[3].starts_with("INCOMPLETE: 1 StatefulSets in "),
        "{table}"
    );

    let (verdict, text) = audit(gone_after_one_page(), Output::Json).await;
    assert_eq!(verdict.unwrap(), Verdict::Incomplete);
    let document: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(document["complete"], false);
    assert!(
        document["error"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts")
    );
    assert_eq!(document["results"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_list_that_fails_at_once_is_an_error_without_a_report() {
    let (verdict, text) = audit(
        vec![Reply::Status(
            403,
            "Forbidden",
            "statefulsets.apps is forbidden",
        )],
        Output::Json,
    )
    .await;
    let error = verdict.unwrap_err().to_string();
    assert!(
        error.starts_with(
            r#"the audit may not list statefulsets.apps in namespace "team-a" (403 Forbidden)"#
        ),
        "{error}"
    );
    assert_eq!(text, "", "no report of nothing");
}

/// The audit of namespace `team-a` with `--write-reports`: the verdict, what
/// was printed and every request the API server saw.
async fn audit_writing(replies: Vec<Reply>, output: Output) -> (Verdict, String, Vec<Seen>) {
    let (client, seen) = recording_api_server(replies);
    let writer = Writer::new(client.clone()).with_retry(FAST);
    let lister = Lister::new(client, Scope::Namespace("team-a".into()), None).with_retry(FAST);
    let mut out = Vec::new();
    let verdict = report(lister, auditor(builtins()), output, Some(writer), &mut out)
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    (verdict, String::from_utf8(out).unwrap(), seen)
}

fn patches(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|request| request.method == "PATCH")
        .collect()
}

#[tokio::test]
async fn a_complete_run_writes_the_namespace_report_after_the_results() {
    let mut replies = three_kinds();
    replies.push(Reply::Object(serde_json::json!({})));
    let (verdict, text, seen) = audit_writing(replies, Output::Json).await;
    assert_eq!(
        verdict,
        Verdict::NotCompliant,
        "the exit code is the audit's"
    );
    let document: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(document["results"].as_array().unwrap().len(), 3);
    let writes = patches(&seen);
    assert_eq!(writes.len(), 1, "{seen:?}");
    assert!(writes[0].uri.starts_with(
        "/apis/wgpolicyk8s.io/v1alpha2/namespaces/team-a/policyreports/stsguard-audit?"
    ));
    let body = &writes[0].body;
    assert_eq!(
        body["summary"],
        serde_json::json!({"pass": 4, "fail": 1, "warn": 4, "error": 0, "skip": 0})
    );
    let failing: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|result| result["result"] == "fail")
        .map(|result| result["resources"][0]["name"].as_str().unwrap())
        .collect();
    assert_eq!(failing, ["scratch"]);
}

#[tokio::test]
async fn a_namespace_left_without_statefulsets_gets_an_empty_report() {
    let replies = vec![
        Reply::Page(vec![], ""),
        Reply::Object(serde_json::json!({})),
    ];
    let (verdict, _, seen) = audit_writing(replies, Output::Table).await;
    assert_eq!(verdict, Verdict::Compliant);
    let writes = patches(&seen);
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].body["results"], Value::Array(vec![]));
}

#[tokio::test]
async fn an_incomplete_run_writes_no_report() {
    let replies = vec![
        Reply::Page(vec![no_claims("team-a", "scratch")], "page-2"),
        Reply::Refused,
        Reply::Refused,
        Reply::Refused,
        Reply::Object(serde_json::json!({})),
    ];
    let (verdict, text, seen) = audit_writing(replies, Output::Table).await;
    assert_eq!(verdict, Verdict::Incomplete);
    assert!(text.contains("INCOMPLETE"), "{text}");
    assert_eq!(
        seen.len(),
        4,
        "the first page, three attempts at the second, no write: {seen:?}"
    );
    assert!(patches(&seen).is_empty());
}

#[tokio::test]
async fn a_refused_report_exits_2_with_the_results_printed() {
    let mut replies = three_kinds();
    replies.push(Reply::Status(
        404,
        "NotFound",
        "the server could not find the requested resource",
    ));
    let (verdict, table, _) = audit_writing(replies, Output::Table).await;
    assert_eq!(verdict, Verdict::ReportsFailed);
    assert_eq!(verdict.exit_code(), ExitCode::from(2));
    assert_eq!(table.lines().count(), 5, "the results are printed: {table}");
}

#[test]
fn reports_are_not_written_for_a_selection() {
    use clap::Parser;
    let error = crate::cli::Cli::try_parse_from([
        "stsguard",
        "audit",
        "--write-reports",
        "--selector",
        "app=web",
    ])
    .unwrap_err();
    assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
}
