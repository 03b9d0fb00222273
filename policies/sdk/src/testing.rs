//! A native test harness: run a policy (or a chain of policies, as the host
//! does) on fixture AdmissionRequests with plain `cargo test`, no WebAssembly.
//!
//! The harness goes through the same entry points as the component exports —
//! the request and settings as JSON text in, a WIT verdict out — so a test sees
//! exactly what the host would see, minus the ABI.
//!
//! ```no_run
//! # struct MyPolicy;
//! # impl stsguard_policy::Policy for MyPolicy {
//! #     const METADATA: stsguard_policy::Metadata = stsguard_policy::Metadata {
//! #         name: "x", version: "0.1.0", description: "", mutating: true, settings_schema: "{}" };
//! #     type Object = stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
//! #     type Settings = stsguard_policy::NoSettings;
//! #     fn evaluate(_: &stsguard_policy::Request<Self::Object>, _: &Self::Settings)
//! #         -> Result<stsguard_policy::Verdict<Self::Object>, stsguard_policy::Error> {
//! #         Ok(stsguard_policy::Verdict::accept()) }
//! # }
//! use stsguard_policy::serde_json::json;
//! use stsguard_policy::testing;
//!
//! let request = testing::load_request("fixtures/lab-statefulset.create.json");
//! let outcome = testing::evaluate::<MyPolicy>(&request, &json!({})).unwrap();
//! assert!(outcome.allowed);
//! assert_eq!(outcome.object_after(&request)["spec"]["podManagementPolicy"], "Parallel");
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::runtime::bindings::stsguard::policy::types::Mutation;
use crate::runtime::{self, bindings};
use crate::{Policy, json, settings};

/// What one policy returned, as the host receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `false` when the policy denied the request.
    pub allowed: bool,
    /// The denial message.
    pub message: Option<String>,
    /// The warnings, without the host's `stsguard/<policy>: ` prefix.
    pub warnings: Vec<String>,
    /// The object after the policy's mutation, applied as the host applies it;
    /// `None` when the policy changed nothing.
    pub mutated_object: Option<Value>,
}

impl Outcome {
    /// The object after the policy: the mutated one, or the request's own.
    pub fn object_after(&self, request: &Value) -> Value {
        self.mutated_object
            .clone()
            .unwrap_or_else(|| request["object"].clone())
    }

    /// The warnings joined by newlines, for `assert!(.., "{}", ..)` messages.
    pub fn warnings_text(&self) -> String {
        self.warnings.join("\n")
    }
}

/// Runs policy `P` on an AdmissionRequest (the `request` member of an
/// AdmissionReview) with these settings. `Err` is the policy's error.
pub fn evaluate<P: Policy>(request: &Value, settings: &Value) -> Result<Outcome, String> {
    let (rest, object) = wit_arguments(request);
    let verdict = runtime::evaluate::<P>(&rest, object, &settings.to_string())?;
    outcome(verdict, &request["object"])
}

/// Checks settings as the host does when it loads the configuration.
pub fn validate_settings<P: Policy>(settings: &Value) -> Result<(), String> {
    runtime::validate_settings::<P>(&settings.to_string())
}

/// The metadata `P` exports, as the host receives it.
pub fn metadata<P: Policy>() -> bindings::Metadata {
    runtime::metadata::<P>()
}

/// An AdmissionRequest as the host passes it to `evaluate`: the request without
/// its `object`, and the object.
fn wit_arguments(request: &Value) -> (String, String) {
    let object = request.get("object").unwrap_or(&Value::Null).to_string();
    let mut rest = request.clone();
    if let Some(members) = rest.as_object_mut() {
        members.remove("object");
    }
    (rest.to_string(), object)
}

/// The verdict as the host sees it: the mutation applied to `object`. A mutation
/// the host would refuse is the policy's error here too.
fn outcome(verdict: bindings::Verdict, object: &Value) -> Result<Outcome, String> {
    let mutated_object = match verdict.mutation {
        None => None,
        Some(Mutation::Object(text)) => {
            let mutated: Value = serde_json::from_str(&text)
                .map_err(|e| format!("returned a mutated object that is not JSON: {e}"))?;
            Some(mutated)
        }
        Some(Mutation::Set(fields)) => {
            let mut mutated = object.clone();
            for field in fields {
                let value: Value = serde_json::from_str(&field.value).map_err(|e| {
                    format!("set {:?} to a value that is not JSON: {e}", field.pointer)
                })?;
                json::set_value(&mut mutated, &field.pointer, value)
                    .map_err(|e| format!("set {:?}: {e}", field.pointer))?;
            }
            Some(mutated)
        }
    };
    Ok(Outcome {
        allowed: verdict.allowed,
        message: verdict.message,
        warnings: verdict.warnings,
        mutated_object: mutated_object.filter(|mutated| mutated != object),
    })
}

/// Reads a JSON file, panicking with a message that names it.
pub fn read_json(path: impl AsRef<Path>) -> Value {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Reads an AdmissionRequest fixture. A whole AdmissionReview is accepted too:
/// its `request` member is returned.
pub fn load_request(path: impl AsRef<Path>) -> Value {
    let value = read_json(path);
    if value.get("kind").and_then(Value::as_str) == Some("AdmissionReview") {
        value["request"].clone()
    } else {
        value
    }
}

/// An AdmissionRequest that creates `object`, shaped like the API server's.
pub fn create_request(object: Value) -> Value {
    admission_request("CREATE", object, Value::Null)
}

/// An AdmissionRequest that updates `old_object` to `object`.
pub fn update_request(object: Value, old_object: Value) -> Value {
    admission_request("UPDATE", object, old_object)
}

fn admission_request(operation: &str, object: Value, old_object: Value) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = format!("{}s", kind.to_lowercase());
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    let options_kind = if operation == "CREATE" {
        "CreateOptions"
    } else {
        "UpdateOptions"
    };
    json!({
        "uid": "00000000-0000-4000-8000-000000000000",
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": object["metadata"]["name"],
        "namespace": object["metadata"]["namespace"],
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
        "object": object,
        "oldObject": old_object,
        "dryRun": false,
        "options": {"kind": options_kind, "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"},
    })
}

/// The request with its `object` replaced, e.g. by a policy's output.
pub fn with_object(request: &Value, object: Value) -> Value {
    let mut request = request.clone();
    request["object"] = object;
    request
}

type EvaluateFn = fn(&str, String, &str) -> Result<bindings::Verdict, String>;

struct Step {
    name: &'static str,
    evaluate: EvaluateFn,
    settings: String,
}

/// Policies run in order, as the host runs its configured chain in `enforce`
/// mode: each sees the object as the ones before left it; the first denial
/// stops the chain; warnings carry the host's `stsguard/<policy>: ` prefix.
#[derive(Default)]
pub struct Chain {
    steps: Vec<Step>,
}

/// What a [`Chain`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainOutcome {
    /// The denial as the user reads it: `policy <p> denied <Kind> <ns>/<name>: <message>`.
    pub denial: Option<String>,
    /// All warnings, prefixed with `stsguard/<policy>: `.
    pub warnings: Vec<String>,
    /// The object after the chain (the request's own when nothing changed).
    pub object: Value,
}

impl Chain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends policy `P` with its settings. Panics if the settings are invalid,
    /// as the host refuses to serve them.
    pub fn policy<P: Policy>(mut self, settings: Value) -> Self {
        let settings = settings.to_string();
        if let Err(e) = settings::parse::<P::Settings>(&settings) {
            panic!("policy `{}`: {e}", P::METADATA.name);
        }
        self.steps.push(Step {
            name: P::METADATA.name,
            evaluate: runtime::evaluate::<P>,
            settings,
        });
        self
    }

    /// Runs the chain on an AdmissionRequest. `Err` names the policy that failed.
    pub fn run(&self, request: &Value) -> Result<ChainOutcome, String> {
        let mut request = request.clone();
        let mut warnings = Vec::new();
        for step in &self.steps {
            let (rest, object) = wit_arguments(&request);
            let verdict = (step.evaluate)(&rest, object, &step.settings)
                .map_err(|e| format!("policy `{}` failed: {e}", step.name))?;
            let outcome = outcome(verdict, &request["object"])
                .map_err(|e| format!("policy `{}` failed: {e}", step.name))?;
            warnings.extend(
                outcome
                    .warnings
                    .iter()
                    .map(|w| format!("stsguard/{}: {w}", step.name)),
            );
            if !outcome.allowed {
                let object = &request["object"];
                let denial = format!(
                    "policy {} denied {} {}/{}: {}",
                    step.name,
                    object["kind"].as_str().unwrap_or("object"),
                    object["metadata"]["namespace"].as_str().unwrap_or_default(),
                    object["metadata"]["name"].as_str().unwrap_or_default(),
                    outcome.message.unwrap_or_default()
                );
                return Ok(ChainOutcome {
                    denial: Some(denial),
                    warnings,
                    object: request["object"].take(),
                });
            }
            if let Some(mutated) = outcome.mutated_object {
                request["object"] = mutated;
            }
        }
        Ok(ChainOutcome {
            denial: None,
            warnings,
            object: request["object"].take(),
        })
    }
}

/// Checks every scenario under `dir` against the chain.
///
/// A scenario is a directory holding `request.json` (an AdmissionRequest) and
/// either `expected.json` (the object after the chain) or `denied.txt` (text
/// the denial must contain). An allowed scenario must also be idempotent: the
/// chain run again on its own output changes nothing. With `BLESS=1` in the
/// environment, `expected.json` files are written instead of compared; review
/// them in the diff. Panics listing every failing scenario.
pub fn check_golden(dir: impl AsRef<Path>, chain: &Chain) {
    let dir = dir.as_ref();
    let bless = std::env::var_os("BLESS").is_some_and(|v| v != "0" && !v.is_empty());
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    scenarios.sort();
    assert!(
        !scenarios.is_empty(),
        "no scenarios under {}",
        dir.display()
    );
    let mut failures = String::new();
    for scenario in &scenarios {
        if let Err(e) = check_scenario(scenario, chain, bless) {
            let _ = writeln!(failures, "- {}: {e}", scenario.display());
        }
    }
    assert!(
        failures.is_empty(),
        "golden scenarios failed (BLESS=1 rewrites expected.json):\n{failures}"
    );
}

fn check_scenario(scenario: &Path, chain: &Chain, bless: bool) -> Result<(), String> {
    let request = load_request(scenario.join("request.json"));
    let outcome = chain.run(&request)?;
    let denied_file = scenario.join("denied.txt");
    let expected_file = scenario.join("expected.json");
    if denied_file.exists() {
        if expected_file.exists() {
            return Err("has both denied.txt and expected.json".into());
        }
        let wanted = std::fs::read_to_string(&denied_file)
            .map_err(|e| format!("cannot read {}: {e}", denied_file.display()))?;
        let wanted = wanted.trim();
        return match &outcome.denial {
            Some(denial) if denial.contains(wanted) => Ok(()),
            Some(denial) => Err(format!("denial {denial:?} does not contain {wanted:?}")),
            None => Err(format!(
                "allowed, but denied.txt expects a denial containing {wanted:?}"
            )),
        };
    }
    if let Some(denial) = &outcome.denial {
        return Err(format!(
            "denied ({denial}); if that is right, write denied.txt"
        ));
    }
    if bless {
        let text = serde_json::to_string_pretty(&outcome.object).expect("JSON serializes") + "\n";
        std::fs::write(&expected_file, text)
            .map_err(|e| format!("cannot write {}: {e}", expected_file.display()))?;
    } else {
        if !expected_file.exists() {
            return Err(
                "no expected.json or denied.txt; run with BLESS=1 to write expected.json".into(),
            );
        }
        let expected = read_json(&expected_file);
        if expected != outcome.object {
            return Err(format!(
                "the object after the chain differs from expected.json:\n{}",
                serde_json::to_string_pretty(&outcome.object).expect("JSON serializes")
            ));
        }
    }
    let again = chain.run(&with_object(&request, outcome.object.clone()))?;
    if again.denial.is_some() || again.object != outcome.object {
        return Err(format!(
            "not idempotent: the chain run on its own output gave {:?} and changed the object to\n{}",
            again.denial,
            serde_json::to_string_pretty(&again.object).expect("JSON serializes")
        ));
    }
    Ok(())
}
