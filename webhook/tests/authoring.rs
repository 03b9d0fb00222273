//! What a policy author runs: `stsguard test` on suites, `inspect` on modules,
//! `eval --policy` on one module — as the binary, through the real engine.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{repo, stsguard};

fn run(args: &[&str], dir: &Path) -> (Option<i32>, String, String) {
    let output = stsguard().args(args).current_dir(dir).output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_suites_of_the_built_ins_that_read_the_cluster_pass() {
    let dir = tempfile::tempdir().unwrap();
    for policy in ["headless-service", "storage-class", "disruption-budget"] {
        let suite = repo().join("policies").join(policy);
        let (code, stdout, stderr) = run(&["test", suite.to_str().unwrap()], dir.path());
        assert_eq!(code, Some(0), "{policy}: {stdout}{stderr}");
        assert!(stdout.contains(" passed, 0 failed"), "{policy}: {stdout}");
    }
}

#[test]
fn the_golden_scenarios_pass_as_a_test_suite() {
    let golden = repo().join("policies/fixtures/golden");
    let (code, stdout, stderr) = run(&["test", "-o", "json"], &golden);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let cases = report["suites"][0]["cases"].as_array().unwrap();
    // Every scenario folder is a case of the suite, so none is forgotten.
    let mut folders: Vec<String> = std::fs::read_dir(&golden)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("request.json").is_file())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    let names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names, folders,
        "policies/fixtures/golden/tests.yaml lacks a scenario"
    );
    for case in cases {
        assert_eq!(case["failures"], serde_json::json!([]), "{case}");
        assert!(case["decision"]["policies"].is_array(), "{case}");
    }
}

/// A suite with a passing case, a failing one and a settings check.
const SUITE: &str = r#"
policies:
  - {name: parallel, module: "builtin:parallel"}
cases:
  - name: ordered gets parallel
    object: sts.yaml
    expect:
      allowed: true
      warnings: ["podManagementPolicy"]
      patch: [{op: add, path: /spec/podManagementPolicy, value: Parallel}]
  - name: wrongly expects a denial
    object: sts.yaml
    expect: {allowed: false}
  - name: settings with a typo are refused
    object: sts.yaml
    settings: {typo: 1}
    expect: {settingsRejected: "typo"}
"#;

const STS: &str = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web}\nspec:\n  replicas: 2\n  serviceName: web\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx}]}\n";

#[test]
fn a_failing_case_exits_1_and_is_reported_in_junit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tests.yaml"), SUITE).unwrap();
    std::fs::write(dir.path().join("sts.yaml"), STS).unwrap();
    let (code, stdout, stderr) = run(&["test"], dir.path());
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("PASS  ./tests.yaml: ordered gets parallel"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  ./tests.yaml: wrongly expects a denial"),
        "{stdout}"
    );
    assert!(stdout.contains("expected denied, got allowed"), "{stdout}");
    assert!(
        stdout.contains("PASS  ./tests.yaml: settings with a typo are refused"),
        "{stdout}"
    );
    assert!(stdout.contains("3 case(s): 2 passed, 1 failed"), "{stdout}");

    let (code, junit, _) = run(&["test", "-o", "junit", "tests.yaml"], dir.path());
    assert_eq!(code, Some(1));
    assert!(
        junit.contains(r#"<testsuites name="stsguard test" tests="3" failures="1" errors="0""#),
        "{junit}"
    );
    assert!(
        junit.contains(r#"<testcase name="wrongly expects a denial" classname="tests.yaml""#),
        "{junit}"
    );
    assert!(
        junit.contains("<failure message=\"expected denied, got allowed\">"),
        "{junit}"
    );
}

#[test]
fn a_suite_that_cannot_run_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tests.yaml"),
        SUITE.replace(
            "object: sts.yaml\n    settings",
            "object: gone.yaml\n    settings",
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("sts.yaml"), STS).unwrap();
    let (code, stdout, _) = run(&["test"], dir.path());
    assert_eq!(code, Some(2), "{stdout}");
    assert!(
        stdout.contains("ERROR ./tests.yaml:15: cases[2] (\"settings with a typo are refused\").object: could not read ./gone.yaml"),
        "{stdout}"
    );
    let empty = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(&["test"], empty.path());
    assert_eq!(code, Some(2));
    assert!(stderr.contains("found no test suite under ."), "{stderr}");
}

#[test]
fn eval_runs_one_module_and_reports_each_policy_as_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sts.yaml"), STS).unwrap();
    let (code, stdout, stderr) = run(
        &[
            "eval",
            "--policy",
            "builtin:probes",
            "--settings",
            "{}",
            "-o",
            "json",
            "sts.yaml",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let object = &report["objects"][0];
    assert_eq!(object["object"], "StatefulSet default/web");
    assert_eq!(object["allowed"], true);
    assert_eq!(object["policies"][0]["name"], "probes");
    assert_eq!(object["policies"][0]["result"], "allowed", "{object}");
    assert_eq!(object["patch"], serde_json::json!([]));

    let (code, _, stderr) = run(
        &[
            "eval",
            "--policy",
            "builtin:parallel",
            "--settings",
            "{typo: 1}",
            "sts.yaml",
        ],
        dir.path(),
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("policy `parallel`") && stderr.contains("typo"),
        "{stderr}"
    );
}

#[test]
fn inspect_describes_a_policy_and_names_what_other_files_are() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(
        &["inspect", "builtin:volume-claims", "-o", "json"],
        dir.path(),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let inspection: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(inspection["contractVersion"], "0.3.0");
    assert_eq!(inspection["metadata"]["reads"], serde_json::json!([]));
    let (code, stdout, stderr) = run(&["inspect", "builtin:headless-service"], dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains(
            "reads:       v1 Service (grant in the policy's config entry: reads: [{apiVersion: v1, \
             kind: Service}])"
        ),
        "{stdout}"
    );
    assert_eq!(inspection["metadata"]["name"], "volume-claims");
    assert_eq!(inspection["metadata"]["targets"][0], "apps/v1 StatefulSet");
    assert_eq!(inspection["sha256"].as_str().unwrap().len(), 64);

    // The smallest core module there is: a header.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let (code, stdout, _) = run(&["inspect", "core.wasm"], dir.path());
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("kind:      a core WebAssembly module"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not servable: it is a core WebAssembly module, not a component"),
        "{stdout}"
    );

    std::fs::write(dir.path().join("notes.wasm"), "hello").unwrap();
    let (code, _, stderr) = run(&["inspect", "notes.wasm"], dir.path());
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("notes.wasm: it is not WebAssembly"),
        "{stderr}"
    );
}

#[test]
fn new_writes_a_project_that_build_recognises_and_refuses_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(&["new", "replica-limit", "--lang", "python"], dir.path());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("stsguard build"), "{stderr}");
    let project = dir.path().join("replica-limit");
    for file in [
        "policy.py",
        "pyproject.toml",
        "wit/policy.wit",
        "tests.yaml",
        "stsguard.yaml",
    ] {
        assert!(project.join(file).is_file(), "{file}");
    }
    // Without the toolchain, build says which version to install.
    let output = stsguard()
        .arg("build")
        .current_dir(&project)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("componentize-py is not installed: pip install componentize-py==0.25.1"),
        "{stderr}"
    );
    // Never over an existing project.
    let (code, _, stderr) = run(&["new", "replica-limit", "--lang", "rust"], dir.path());
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("already exists and is not empty"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["new", "Replica_Limit"], dir.path());
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cannot name a policy"), "{stderr}");
}

#[test]
fn build_in_a_folder_that_is_no_project_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(&["build"], dir.path());
    assert_eq!((code, stdout.as_str()), (Some(2), ""));
    assert!(stderr.contains(". is not a policy project"), "{stderr}");
    assert!(
        stderr.contains("stsguard new NAME --lang rust|python|javascript"),
        "{stderr}"
    );
}
