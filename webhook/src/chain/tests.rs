//! The chain run through the real engine, with the scripted test policy
//! (`policies/testing/scripted`) standing in for every kind of behaviour.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stsguard_contract::text::MAX_DENIAL_CHARS;

use super::*;
use crate::chain::{CircuitState, Refusal};
use crate::config::Config;
use crate::engine::{self, Engine, EngineOptions, EvalError};
use crate::review::{self, ReviewRequest};

use crate::testing::engine;

fn chain(yaml: &str) -> PolicySet {
    chain_on(engine(), yaml)
}

/// The policies of `yaml`, with `SCRIPTED` standing for the test policy.
fn chain_on(engine: &Engine, yaml: &str) -> PolicySet {
    let yaml = yaml.replace(
        "SCRIPTED",
        &crate::testing::scripted_policy().display().to_string(),
    );
    PolicySet::load(engine, &Config::parse(&yaml).unwrap()).unwrap()
}

fn request(operation: &str) -> ReviewRequest {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "uid-1",
            "kind": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
            "operation": operation,
            "namespace": "default",
            "name": "web",
            "object": {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": "web", "namespace": "default", "creationTimestamp": null},
                "spec": {"replicas": 3, "aFieldFromTheFuture": {"x": 1}},
            },
        },
    });
    review::parse(&serde_json::to_vec(&body).unwrap()).unwrap()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[test]
fn policies_run_in_order_and_see_earlier_mutations() {
    let set = chain(
        "policies:
  - {name: first, module: SCRIPTED, settings: {behaviour: label, key: step, value: one}}
  - {name: second, module: SCRIPTED, settings: {behaviour: require-label, key: step, value: one}}
  - {name: third, module: SCRIPTED, settings: {behaviour: label, key: other, value: two}}",
    );
    let mut review = request("CREATE");
    let outcome = set.evaluate(&mut review, Selection::All, soon());
    assert_eq!(outcome.denial, None);
    let object = review.object;
    assert_eq!(
        object["metadata"]["labels"],
        json!({"step": "one", "other": "two"})
    );
    // Fields no Rust type knows survive untouched.
    assert_eq!(object["spec"]["aFieldFromTheFuture"], json!({"x": 1}));
    assert_eq!(object["metadata"]["creationTimestamp"], Value::Null);
    assert_eq!(
        outcome.warnings,
        [
            "stsguard/first: set label step=one",
            "stsguard/third: set label other=two"
        ]
    );
    let patch = serde_json::to_value(outcome.patch.unwrap()).unwrap();
    assert_eq!(
        patch,
        json!([{"op": "add", "path": "/metadata/labels", "value": {"step": "one", "other": "two"}}])
    );
}

#[test]
fn set_mutations_apply_in_order_and_are_checked_like_whole_objects() {
    let set = chain(
        r#"policies:
  - name: setter
    module: SCRIPTED
    settings:
      behaviour: set
      fields:
        - {pointer: /metadata/labels/step, value: one}
        - {pointer: /spec/template/spec, value: {containers: [{name: app}]}}
        - {pointer: /spec/template/spec/containers/0/readinessProbe, value: {tcpSocket: {port: 80}}}
  - {name: checker, module: SCRIPTED, settings: {behaviour: require-label, key: step, value: one}}
  - name: again
    module: SCRIPTED
    settings: {behaviour: set, fields: [{pointer: /metadata/labels/step, value: one}]}
  - name: renamer
    module: SCRIPTED
    failurePolicy: ignore
    settings: {behaviour: set, fields: [{pointer: /metadata/labels/x, value: y}, {pointer: /metadata/name, value: evil}]}
  - name: bad-pointer
    module: SCRIPTED
    failurePolicy: ignore
    settings: {behaviour: set, fields: [{pointer: /spec/replicas/x, value: 1}]}
  - name: not-json
    module: SCRIPTED
    failurePolicy: ignore
    settings: {behaviour: set, fields: [{pointer: /spec/replicas, raw: "{3"}]}"#,
    );
    let mut review = request("CREATE");
    let outcome = set.evaluate(&mut review, Selection::All, soon());
    assert_eq!(outcome.denial, None);
    let results: Vec<_> = outcome.runs.iter().map(|r| r.result.clone()).collect();
    assert_eq!(results[0], RunResult::Allowed { mutated: true });
    assert_eq!(results[1], RunResult::Allowed { mutated: false });
    // A value already in place is no change.
    assert_eq!(results[2], RunResult::Allowed { mutated: false });
    for (result, expected) in results[3..].iter().zip([
        "policies may not change an object's identity",
        "\"/spec/replicas/x\": \"x\" is inside a value that is not an object",
        "not JSON",
    ]) {
        assert!(
            matches!(result, RunResult::Failed(EvalError::Policy(m)) if m.contains(expected)),
            "{result:?}"
        );
    }
    // Failed policies changed nothing, not even the valid part of their edits.
    let object = review.object;
    assert_eq!(object["metadata"]["labels"], json!({"step": "one"}));
    assert_eq!(object["metadata"]["name"], "web");
    assert_eq!(
        object["spec"],
        json!({"replicas": 3, "aFieldFromTheFuture": {"x": 1}, "template": {"spec": {"containers": [
                {"name": "app", "readinessProbe": {"tcpSocket": {"port": 80}}}]}}})
    );
}

#[test]
fn an_enforced_denial_stops_the_chain_and_names_the_policy() {
    let set = chain(
        "policies:
  - {name: gate, module: SCRIPTED, settings: {behaviour: deny, message: no thanks}}
  - {name: later, module: SCRIPTED, settings: {behaviour: label, key: a, value: b}}",
    );
    let outcome = set.evaluate(&mut request("CREATE"), Selection::All, soon());
    assert_eq!(
        outcome.denial,
        Some(Denial {
            policy: "gate".into(),
            message: "no thanks".into()
        })
    );
    assert_eq!(
        outcome.runs.len(),
        1,
        "the policy after a denial must not run"
    );
    assert!(outcome.patch.is_none());
}

#[test]
fn monitor_mode_never_denies_or_mutates_but_says_what_it_would_do() {
    let set = chain(
            "policies:
  - {name: watch-deny, module: SCRIPTED, mode: monitor, settings: {behaviour: deny, message: too big}}
  - {name: watch-label, module: SCRIPTED, mode: monitor, settings: {behaviour: label, key: a, value: b}}
  - {name: watch-broken, module: SCRIPTED, mode: monitor, settings: {behaviour: trap}}",
        );
    let outcome = set.evaluate(&mut request("CREATE"), Selection::All, soon());
    assert_eq!(outcome.denial, None);
    assert!(outcome.patch.is_none());
    assert_eq!(
        outcome.warnings,
        [
            "stsguard/watch-deny (monitor): would deny: too big",
            "stsguard/watch-label (monitor): set label a=b",
            r#"stsguard/watch-label (monitor): would apply patch [{"op":"add","path":"/metadata/labels","value":{"a":"b"}}]"#,
            "stsguard/watch-broken (monitor): the policy could not evaluate this object (trap) and was skipped",
        ]
    );
}

#[test]
fn failure_policy_decides_what_an_error_means() {
    let set = chain(
            "policies:
  - {name: lenient, module: SCRIPTED, failurePolicy: ignore, settings: {behaviour: error, message: oops}}
  - {name: labeller, module: SCRIPTED, settings: {behaviour: label, key: a, value: b}}
  - {name: strict, module: SCRIPTED, failurePolicy: fail, settings: {behaviour: trap}}",
        );
    let outcome = set.evaluate(&mut request("CREATE"), Selection::All, soon());
    let denial = outcome.denial.unwrap();
    assert_eq!(denial.policy, "strict");
    assert!(
        denial.message.contains("(trap)") && denial.message.contains("uid-1"),
        "{}",
        denial.message
    );
    assert!(
        !denial.message.contains("scripted trap"),
        "internal details stay in the log"
    );
    assert_eq!(
        outcome.warnings[0],
        "stsguard/lenient: the policy could not evaluate this object (policy error) and was skipped"
    );
    let reasons: Vec<_> = outcome.runs.iter().map(|r| r.result.clone()).collect();
    assert!(matches!(reasons[0], RunResult::Failed(EvalError::Policy(ref m)) if m == "oops"));
    assert!(matches!(reasons[2], RunResult::Failed(EvalError::Trap(_))));
}

#[test]
fn loops_time_out_and_memory_bombs_hit_the_limit() {
    let set = chain(
            "policies:
  - {name: looper, module: SCRIPTED, failurePolicy: ignore, timeout: 50ms, settings: {behaviour: loop}}
  - {name: hog, module: SCRIPTED, failurePolicy: ignore, memoryLimit: 16Mi, settings: {behaviour: memory-bomb}}
  - {name: fine, module: SCRIPTED, settings: {behaviour: label, key: still, value: works}}",
        );
    let started = Instant::now();
    let mut review = request("CREATE");
    let outcome = set.evaluate(&mut review, Selection::All, soon());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            outcome.runs[0].result,
            RunResult::Failed(EvalError::Timeout(_))
        ),
        "{:?}",
        outcome.runs[0]
    );
    assert!(outcome.runs[0].duration >= Duration::from_millis(50));
    assert_eq!(
        outcome.runs[1].result,
        RunResult::Failed(EvalError::MemoryLimit(16 << 20))
    );
    assert_eq!(review.object["metadata"]["labels"]["still"], "works");
}

#[test]
fn the_server_wide_memory_budget_stops_a_hog_and_is_given_back() {
    // An engine of its own, with a budget far below the policy's limit.
    let engine = Engine::new(&EngineOptions {
        cache_dir: Some(crate::testing::cache_dir()),
        guest_memory_budget: 8 << 20,
        ..EngineOptions::default()
    })
    .unwrap();
    let set = chain_on(
            &engine,
            "policies:
  - {name: hog, module: SCRIPTED, failurePolicy: ignore, memoryLimit: 64Mi, settings: {behaviour: memory-bomb}}
  - {name: fine, module: SCRIPTED, settings: {behaviour: label, key: still, value: works}}",
        );
    for _ in 0..3 {
        let outcome = set.evaluate(&mut request("CREATE"), Selection::All, soon());
        assert_eq!(
            outcome.runs[0].result,
            RunResult::Failed(EvalError::MemoryBudget(8 << 20))
        );
        assert!(
            outcome.warnings[0].contains("(memory budget) and was skipped"),
            "{:?}",
            outcome.warnings
        );
        // Every instance gave its memory back: the next policy, and the next
        // review, have the whole budget.
        assert_eq!(outcome.runs[1].result, RunResult::Allowed { mutated: true });
    }
    assert_eq!(engine.guest_memory_in_use(), 0);
}

#[test]
fn the_review_deadline_bounds_every_policy() {
    let set = chain(
        "policies:
  - {name: looper, module: SCRIPTED, timeout: 10s, settings: {behaviour: loop}}",
    );
    let started = Instant::now();
    let outcome = set.evaluate(
        &mut request("CREATE"),
        Selection::All,
        Instant::now() + Duration::from_millis(100),
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(outcome.denial.unwrap().policy, "looper");
}

#[test]
fn the_object_is_left_as_the_api_server_will_store_it() {
    let labelled = "policies:
  - {name: first, module: SCRIPTED, settings: {behaviour: label, key: step, value: one}}";
    let sent = request("CREATE").object;
    // Allowed: changed in place, as the patch says.
    let mut review = request("CREATE");
    let outcome = chain(labelled).evaluate(&mut review, Selection::All, soon());
    let mut patched = sent.clone();
    json_patch::patch(&mut patched, outcome.patch.as_ref().unwrap()).unwrap();
    assert_eq!(review.object, patched);
    assert_eq!(review.object["metadata"]["labels"]["step"], "one");
    // Denied after a change: put back as it came.
    let mut review = request("CREATE");
    let outcome = chain(&format!(
        "{labelled}
  - {{name: gate, module: SCRIPTED, settings: {{behaviour: deny, message: no}}}}"
    ))
    .evaluate(&mut review, Selection::All, soon());
    assert!(outcome.denial.is_some() && outcome.patch.is_none());
    assert_eq!(outcome.runs[0].result, RunResult::Allowed { mutated: true });
    assert_eq!(review.object, sent);
}

#[test]
fn bad_output_is_a_policy_error() {
    let set = chain(
        "policies:
  - {name: garbled, module: SCRIPTED, settings: {behaviour: wrong-json}}",
    );
    let outcome = set.evaluate(&mut request("CREATE"), Selection::All, soon());
    assert!(
        matches!(&outcome.runs[0].result, RunResult::Failed(EvalError::Policy(m)) if m.contains("not JSON"))
    );
    assert!(outcome.denial.is_some());
}

#[test]
fn deletes_subresources_and_untargeted_kinds_pass_untouched() {
    let set = chain(
        "policies: [{name: gate, module: SCRIPTED, settings: {behaviour: deny, message: no}}]",
    );
    let outcome = set.evaluate(&mut request("DELETE"), Selection::All, soon());
    assert!(outcome.denial.is_none() && outcome.runs.is_empty());
    let mut scale = request("UPDATE");
    scale.sub_resource = "scale".into();
    assert!(
        set.evaluate(&mut scale, Selection::All, soon())
            .runs
            .is_empty()
    );
    let mut pod = request("CREATE");
    pod.kind.group = String::new();
    pod.kind.kind = "Pod".into();
    assert!(
        set.evaluate(&mut pod, Selection::All, soon())
            .runs
            .is_empty()
    );
}

#[test]
fn selection_runs_one_policy() {
    let set = chain(
        "policies:
  - {name: gate, module: SCRIPTED, settings: {behaviour: deny, message: no}}
  - {name: labeller, module: SCRIPTED, settings: {behaviour: label, key: a, value: b}}",
    );
    let outcome = set.evaluate(&mut request("CREATE"), Selection::Only("labeller"), soon());
    assert!(outcome.denial.is_none());
    assert!(outcome.patch.is_some());
}

#[test]
fn guest_output_does_not_disturb_evaluation() {
    let set = chain(
        "policies: [{name: chatty, module: SCRIPTED, settings: {behaviour: print, message: hello}}]",
    );
    let outcome = set.evaluate(&mut request("CREATE"), Selection::All, soon());
    assert_eq!(
        outcome.runs[0].result,
        RunResult::Allowed { mutated: false }
    );
}

/// Runs `f` with a subscriber that keeps every log line, and returns them.
fn logged<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    #[derive(Clone, Default)]
    struct Kept(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Kept {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let kept = Kept::default();
    let writer = kept.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(kept.0.lock().unwrap().clone()).unwrap();
    (result, text.lines().map(String::from).collect())
}

#[test]
fn a_policy_that_logs_in_a_loop_is_held_to_its_log_quota() {
    let set = chain(
        "policies: [{name: chatty, module: SCRIPTED, timeout: 300ms, failurePolicy: ignore,
                         settings: {behaviour: log-flood, message: flood-line}}]",
    );
    let (outcome, lines) = logged(|| set.evaluate(&mut request("CREATE"), Selection::All, soon()));
    assert!(
        matches!(
            outcome.runs[0].result,
            RunResult::Failed(EvalError::Timeout(_))
        ),
        "{:?}",
        outcome.runs
    );
    let flood = lines.iter().filter(|line| line.contains("flood-line"));
    assert!(
        flood
            .clone()
            .all(|line| line.contains(r#"policy="chatty""#)),
        "{lines:#?}"
    );
    assert_eq!(flood.count(), engine::LogQuota::PER_EVALUATION.lines);
    let notices = lines
        .iter()
        .filter(|line| line.contains("the rest of its output is dropped"));
    assert_eq!(notices.count(), 1, "{lines:#?}");
}

#[test]
fn loading_refuses_bad_modules_and_settings_naming_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm but not really").unwrap();
    let cases = [
            (format!("policies: [{{name: junk, module: {}}}]", garbage.display()), "policy `junk`"),
            ("policies: [{name: gone, module: /nonexistent/p.wasm}]".to_string(), "/nonexistent/p.wasm"),
            ("policies: [{name: picky, module: SCRIPTED, settings: {behaviour: dance}}]".to_string(), "unknown behaviour `dance`"),
            ("policies: [{name: huge, module: SCRIPTED, memoryLimit: 4Gi, settings: {behaviour: allow}}]".to_string(), "above the largest allowed"),
        ];
    for (yaml, expected) in cases {
        let yaml = yaml.replace(
            "SCRIPTED",
            &crate::testing::scripted_policy().display().to_string(),
        );
        let error = PolicySet::load(engine(), &Config::parse(&yaml).unwrap())
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{error}");
    }
}

#[test]
fn a_long_denial_message_is_cut() {
    let message = "no ".repeat(5000);
    let set = chain(&format!(
        "policies: [{{name: gate, module: SCRIPTED, settings: {{behaviour: deny, message: '{message}'}}}}]"
    ));
    let outcome = set.evaluate(&mut request("CREATE"), Selection::All, soon());
    let denial = outcome.denial.unwrap().message;
    assert_eq!(denial.chars().count(), MAX_DENIAL_CHARS);
    assert!(denial.starts_with("no no") && denial.ends_with('…'));
}

#[test]
fn the_host_refuses_exactly_what_the_contract_table_says() {
    use stsguard_contract::cases;
    let (request, cases) = cases::table();
    // One policy per case, each a scripted wasm policy returning its mutation.
    let policies: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(index, case)| {
            let settings = match (&case.set, &case.object) {
                (Some(values), None) => json!({"behaviour": "set", "fields": values
                    .iter()
                    .map(|value| json!({"pointer": value.pointer, "value": value.value}))
                    .collect::<Vec<_>>()}),
                _ => json!({"behaviour": "object", "object": case.object}),
            };
            json!({"name": format!("case-{index}"), "module": "SCRIPTED",
                   "failurePolicy": "ignore", "settings": settings})
        })
        .collect();
    let set = chain(&serde_json::to_string(&json!({ "policies": policies })).unwrap());
    let body =
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
    let review = review::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
    let failures: Vec<String> = cases
        .iter()
        .enumerate()
        .filter_map(|(index, case)| {
            let name = format!("case-{index}");
            let mut review = review.clone();
            let outcome = set.evaluate(&mut review, Selection::Only(&name), soon());
            let result = match &outcome.runs[0].result {
                RunResult::Failed(EvalError::Policy(message)) => Err(message.clone()),
                RunResult::Allowed { mutated: true } => Ok(Some(review.object)),
                RunResult::Allowed { mutated: false } => Ok(None),
                other => Err(format!("{other:?}")),
            };
            case.check(result).err()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_failure_of_stsguard_itself_denies_only_where_a_policy_would() {
    let set = chain(
        "policies:
  - {name: watcher, module: SCRIPTED, mode: monitor, settings: {behaviour: allow}}
  - {name: lenient, module: SCRIPTED, failurePolicy: ignore, settings: {behaviour: allow}}
  - {name: strict, module: SCRIPTED, settings: {behaviour: allow}}",
    );
    assert!(
        set.fails_closed(None),
        "strict enforces with failurePolicy fail"
    );
    assert!(!set.fails_closed(Some("watcher")));
    assert!(!set.fails_closed(Some("lenient")));
    assert!(set.fails_closed(Some("strict")));
    let observing = chain(
        "policies: [{name: watcher, module: SCRIPTED, mode: monitor, failurePolicy: fail, settings: {behaviour: allow}}]",
    );
    assert!(!observing.fails_closed(None), "monitor mode never denies");
}

#[test]
fn a_looping_policy_s_circuit_opens_and_the_others_keep_working() {
    let set = chain(
        "policies:
  - {name: looper, module: SCRIPTED, failurePolicy: ignore, timeout: 50ms,
     circuit: {failures: 2, cooldown: 1h}, settings: {behaviour: loop}}
  - {name: labeller, module: SCRIPTED, settings: {behaviour: label, key: still, value: works}}",
    );
    for _ in 0..2 {
        let outcome = set.evaluate(&mut request("CREATE"), Selection::All, soon());
        assert!(matches!(
            outcome.runs[0].result,
            RunResult::Failed(EvalError::Timeout(_))
        ));
    }
    assert_eq!(
        set.get("looper").unwrap().circuit_state(),
        CircuitState::Open
    );
    // Open: the looper is not run at all, its failurePolicy (ignore) decides, and
    // the review says so; the next policy runs as before.
    let mut review = request("CREATE");
    let outcome = set.evaluate(&mut review, Selection::All, soon());
    assert!(
        matches!(
            &outcome.runs[0].result,
            RunResult::Skipped(Refusal::Open { failures: 2, .. })
        ),
        "{:?}",
        outcome.runs[0]
    );
    assert_eq!(outcome.runs[0].duration, Duration::ZERO);
    assert_eq!(outcome.runs[1].result, RunResult::Allowed { mutated: true });
    assert_eq!(review.object["metadata"]["labels"]["still"], "works");
    assert!(
        outcome
            .warnings
            .contains(&"stsguard/looper: the policy could not evaluate this object (circuit open) and was skipped".to_string()),
        "{:?}",
        outcome.warnings
    );
    assert_eq!(
        outcome.runs[0].audit_annotation().as_deref(),
        Some("not run (circuit_open): skipped")
    );
    assert_eq!(
        set.get("labeller").unwrap().circuit_state(),
        CircuitState::Closed
    );
}

#[test]
fn an_open_circuit_with_failure_policy_fail_denies_at_once() {
    let set = chain(
        "policies:
  - {name: looper, module: SCRIPTED, timeout: 50ms, circuit: {failures: 1, cooldown: 1h},
     settings: {behaviour: loop}}",
    );
    let first = set.evaluate(&mut request("CREATE"), Selection::All, soon());
    assert!(first.denial.unwrap().message.contains("(timeout)"));
    let second = set.evaluate(&mut request("CREATE"), Selection::All, soon());
    let denial = second.denial.unwrap();
    assert_eq!(denial.policy, "looper");
    assert!(
        denial.message.contains("(circuit open)"),
        "{}",
        denial.message
    );
}
