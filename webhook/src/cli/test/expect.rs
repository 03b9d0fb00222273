//! Whether a decision is what a case expects; each difference becomes one
//! line that says what was expected and what came.

use serde_json::Value;

use super::suite::Expect;
use crate::cli::outcome::DecisionReport;

/// Every way `got` differs from `expect`; empty when the case passes.
/// `again` is the decision on the chain's own output (for idempotence).
pub fn differences(
    expect: &Expect,
    got: &DecisionReport,
    again: Option<&DecisionReport>,
) -> Vec<String> {
    let mut out = Vec::new();
    let failures: Vec<String> = got
        .policies
        .iter()
        .filter_map(|run| Some(format!("{}: {}", run.name, run.error.as_ref()?)))
        .collect();
    if let Some(allowed) = expect.allowed
        && allowed != got.allowed
    {
        out.push(match &got.message {
            Some(message) => format!("expected allowed, got denied: {message}"),
            None => "expected denied, got allowed".to_string(),
        });
    }
    let message = got.message.as_deref().unwrap_or("");
    if let Some(wanted) = &expect.message
        && !message.contains(wanted.as_str())
    {
        out.push(if got.message.is_some() {
            format!("expected the denial to contain {wanted:?}, got {message:?}")
        } else {
            format!("expected a denial containing {wanted:?}, got no denial")
        });
    }
    if let Some(pattern) = &expect.message_matches {
        let regex = regex::Regex::new(pattern).expect("checked when the suite loaded");
        if !regex.is_match(message) {
            out.push(format!(
                "expected the denial to match /{pattern}/, got {message:?}"
            ));
        }
    }
    if let Some(wanted) = &expect.warnings {
        let fits = wanted.len() == got.warnings.len()
            && wanted
                .iter()
                .zip(&got.warnings)
                .all(|(w, g)| g.contains(w.as_str()));
        if !fits && wanted.is_empty() {
            out.push(format!("expected no warnings, got {:?}", got.warnings));
        } else if !fits {
            out.push(format!(
                "expected {} warning(s) containing {wanted:?} in that order, got {:?}",
                wanted.len(),
                got.warnings
            ));
        }
    }
    if let Some(wanted) = &expect.patch
        && wanted != &got.patch
    {
        out.push(format!(
            "expected the patch {}, got {}",
            compact(wanted),
            compact(&got.patch)
        ));
    }
    if let Some(wanted) = &expect.object {
        match &got.mutated {
            None => out.push("expected an object, but the request was denied".to_string()),
            Some(mutated) if mutated != wanted => {
                let diff = json_patch::diff(wanted, mutated);
                out.push(format!(
                    "the object differs from the expected one; from expected to got: {}",
                    compact(&serde_json::to_value(diff).expect("a patch serializes"))
                ));
            }
            Some(_) => {}
        }
    }
    if expect.idempotent != Some(false)
        && let Some(again) = again
        && (again.patch != Value::Array(Vec::new()) || !again.allowed)
    {
        out.push(format!(
            "not idempotent: run again on its own output, the chain {} (Kubernetes may call a \
             mutating webhook again on its own output; set `idempotent: false` in expect to \
             allow it)",
            if again.allowed {
                format!("patched it again: {}", compact(&again.patch))
            } else {
                format!("denied it: {}", again.message.as_deref().unwrap_or(""))
            }
        ));
    }
    if !out.is_empty() && !failures.is_empty() {
        out.push(format!("policies that failed: {}", failures.join("; ")));
    }
    out
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).expect("JSON serializes")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::outcome::PolicyReport;

    fn report(
        allowed: bool,
        message: Option<&str>,
        warnings: &[&str],
        patch: Value,
    ) -> DecisionReport {
        DecisionReport {
            source: "case".into(),
            object: "StatefulSet default/web".into(),
            operation: "CREATE".into(),
            allowed,
            message: message.map(str::to_string),
            warnings: warnings.iter().map(|w| w.to_string()).collect(),
            patch,
            mutated: allowed.then(|| json!({"spec": {"minReadySeconds": 10}})),
            policies: vec![PolicyReport {
                name: "demo".into(),
                mode: "enforce",
                result: "mutated",
                warnings: vec![],
                message: None,
                error: None,
                duration_ms: 0.1,
            }],
        }
    }

    #[test]
    fn only_what_is_expected_is_checked() {
        let got = report(true, None, &["stsguard/demo: set x"], json!([]));
        assert!(differences(&Expect::default(), &got, None).is_empty());
        let expect = Expect {
            allowed: Some(true),
            warnings: Some(vec!["set x".into()]),
            patch: Some(json!([])),
            object: Some(json!({"spec": {"minReadySeconds": 10}})),
            ..Expect::default()
        };
        assert!(differences(&expect, &got, Some(&got)).is_empty());
    }

    #[test]
    fn each_difference_is_one_line() {
        let got = report(
            false,
            Some("policy demo denied StatefulSet default/web: too big"),
            &[],
            json!([]),
        );
        let expect = Expect {
            allowed: Some(true),
            message: Some("too small".into()),
            message_matches: Some("^nothing$".into()),
            warnings: Some(vec!["set".into()]),
            object: Some(json!({})),
            ..Expect::default()
        };
        let lines = differences(&expect, &got, None);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].starts_with("expected allowed, got denied: policy demo denied"));
        assert!(lines[1].contains("to contain \"too small\""));
        assert!(lines[2].contains("to match /^nothing$/"));
        assert!(lines[3].contains("expected 1 warning(s)"));
        assert_eq!(lines[4], "expected an object, but the request was denied");
    }

    #[test]
    fn an_object_that_differs_is_shown_as_a_patch() {
        let got = report(true, None, &[], json!([]));
        let expect = Expect {
            object: Some(json!({"spec": {"minReadySeconds": 5}})),
            ..Expect::default()
        };
        assert_eq!(
            differences(&expect, &got, None),
            [
                r#"the object differs from the expected one; from expected to got: [{"op":"replace","path":"/spec/minReadySeconds","value":10}]"#
            ]
        );
    }

    #[test]
    fn a_chain_that_patches_its_own_output_is_not_idempotent() {
        let got = report(
            true,
            None,
            &[],
            json!([{"op": "add", "path": "/a", "value": 1}]),
        );
        let lines = differences(&Expect::default(), &got, Some(&got));
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with(
                "not idempotent: run again on its own output, the chain patched it again"
            ),
            "{}",
            lines[0]
        );
        let allowed = Expect {
            idempotent: Some(false),
            ..Expect::default()
        };
        assert!(differences(&allowed, &got, Some(&got)).is_empty());
    }
}
