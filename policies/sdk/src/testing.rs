//! A native test harness: run a policy (or a chain of policies, as the host
//! does) on fixture AdmissionRequests with plain `cargo test`, no WebAssembly.
//!
//! The harness goes through the same entry points as the component exports —
//! the request and settings as JSON text in, a verdict out — and applies the
//! verdict with the host's own code (`stsguard-contract`): a mutation the server
//! would refuse (a changed name or uid, a bad pointer, a mutation from a policy
//! that says it does not mutate) fails here with the server's message, and
//! warnings and denials read exactly as the server sends them. What is left out
//! is the ABI.
//!
//! ```no_run
//! # struct MyPolicy;
//! # impl stsguard_policy::Policy for MyPolicy {
//! #     const METADATA: stsguard_policy::Metadata = stsguard_policy::Metadata {
//! #         name: "x", version: "0.1.0", description: "", mutating: true, settings_schema: "{}" };
//! #     type Object = stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
//! #     type Settings = stsguard_policy::NoSettings;
//! #     fn evaluate(_: &stsguard_policy::Request<Self::Object>, _: &Self::Settings)
//! #         -> Result<stsguard_policy::Verdict, stsguard_policy::Error> {
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

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use stsguard_contract::request::{self, Requester};
use stsguard_contract::text::{self, ObjectName};

use crate::cluster;
use crate::runtime::{self, bindings};
use crate::{Policy, settings};

/// What one policy returned, as the host receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `false` when the policy denied the request.
    pub allowed: bool,
    /// The denial message.
    pub message: Option<String>,
    /// The warnings as the policy returned them, without the host's
    /// `stsguard/<policy>: ` prefix ([`Chain`] shows them as the host sends them).
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

/// The cluster a policy reads in a test: the objects it holds, and nothing
/// else (every kind is known; a kind without objects lists empty). Reads are
/// answered by the host's rules: a kind the policy does not declare in
/// [`Policy::READS`] is refused, a list past the size bound is too large.
///
/// ```
/// use stsguard_policy::serde_json::json;
/// use stsguard_policy::testing::Cluster;
/// let cluster = Cluster::new()
///     .with(json!({"apiVersion": "v1", "kind": "Service",
///                  "metadata": {"name": "web", "namespace": "default"},
///                  "spec": {"clusterIP": "None", "selector": {"app": "web"}}}));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    snapshot: stsguard_contract::cluster::Snapshot,
}

impl Cluster {
    /// An empty cluster: what a policy sees when a test gives none.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an object (with `apiVersion`, `kind` and `metadata.name`; a
    /// namespaced one without a namespace goes to `default`). Panics with the
    /// reason when it cannot be added.
    pub fn with(mut self, object: Value) -> Self {
        if let Err(e) = self.snapshot.insert(object) {
            panic!("testing::Cluster: {e}");
        }
        self
    }

    /// Adds every object of a YAML or JSON file (documents separated by `---`,
    /// or a `List`), as `stsguard test` reads a `context:` file.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_file(self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        self.with_yaml(&text)
    }

    /// Adds every object of YAML or JSON text (documents separated by `---`,
    /// or a `List`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_yaml(mut self, text: &str) -> Self {
        use serde::Deserialize;
        for document in serde_yaml::Deserializer::from_str(text) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("testing::Cluster: not YAML: {e}"));
            let objects = match value {
                Value::Null => Vec::new(),
                Value::Object(ref map)
                    if map.get("kind").and_then(Value::as_str) == Some("List") =>
                {
                    map.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                }
                other => vec![other],
            };
            for object in objects {
                self = self.with(object);
            }
        }
        self
    }

    fn run<R>(&self, reads: &[cluster::Kind], f: impl FnOnce() -> R) -> R {
        let declared = reads.iter().map(cluster::Kind::resource_kind).collect();
        cluster::with_fake(&self.snapshot, declared, f)
    }
}

/// Runs policy `P` on an AdmissionRequest (the `request` member of an
/// AdmissionReview) with these settings, in an empty cluster. `Err` is the
/// policy's error.
pub fn evaluate<P: Policy>(request: &Value, settings: &Value) -> Result<Outcome, String> {
    evaluate_in::<P>(&Cluster::new(), request, settings)
}

/// [`evaluate`] with the policy's cluster reads answered from `cluster`.
pub fn evaluate_in<P: Policy>(
    cluster: &Cluster,
    request: &Value,
    settings: &Value,
) -> Result<Outcome, String> {
    let (rest, object) = wit_arguments(request);
    let verdict = cluster.run(P::READS, || {
        runtime::evaluate::<P>(&rest, object, &settings.to_string())
    })?;
    outcome(verdict, P::METADATA.mutating, &request["object"])
}

/// [`evaluate`] for a test that expects an answer: panics with the policy's
/// error, and checks that every warning is one line that reaches the user
/// whole, with the host's prefix, within [`MAX_WARNING_CHARS`](crate::MAX_WARNING_CHARS).
pub fn run<P: Policy>(request: &Value, settings: &Value) -> Outcome {
    run_in::<P>(&Cluster::new(), request, settings)
}

/// [`run`] with the policy's cluster reads answered from `cluster`.
pub fn run_in<P: Policy>(cluster: &Cluster, request: &Value, settings: &Value) -> Outcome {
    let outcome = evaluate_in::<P>(cluster, request, settings)
        .unwrap_or_else(|e| panic!("policy `{}` failed: {e}", P::METADATA.name));
    let prefix = text::warning_prefix(P::METADATA.name, false)
        .chars()
        .count();
    for warning in &outcome.warnings {
        assert!(
            !warning.contains(['\n', '\r'])
                && prefix + warning.chars().count() <= crate::MAX_WARNING_CHARS,
            "warning too long or not one line (the host would cut it): {warning}"
        );
    }
    outcome
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

/// The verdict as the host sees it: the mutation applied to `object` by the
/// host's own step. A verdict the host would refuse is the policy's error here
/// too, with the host's message.
fn outcome(
    verdict: stsguard_contract::Verdict,
    mutating: bool,
    object: &Value,
) -> Result<Outcome, String> {
    let mut after = Cow::Borrowed(object);
    let applied = verdict
        .apply(mutating, &mut after)
        .map_err(|error| error.to_string())?;
    Ok(Outcome {
        allowed: applied.allowed,
        message: applied.message,
        warnings: applied.warnings,
        mutated_object: match after {
            Cow::Owned(mutated) if applied.changed => Some(mutated),
            _ => None,
        },
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

/// The AdmissionRequest of a golden scenario of this repository
/// (`policies/fixtures/golden/<scenario>/request.json`), which the built-in
/// policies' tests share.
pub fn golden_request(scenario: &str) -> Value {
    load_request(
        Path::new(GOLDEN_SCENARIOS)
            .join(scenario)
            .join("request.json"),
    )
}

/// Where the golden scenarios are: see [`check_golden`].
pub const GOLDEN_SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/golden");

/// The request with these annotations added to its object.
pub fn annotated(mut request: Value, annotations: &[(&str, &str)]) -> Value {
    for (key, value) in annotations {
        request["object"]["metadata"]["annotations"][*key] = json!(value);
    }
    request
}

/// An AdmissionRequest that creates `object`, shaped like the API server's.
pub fn create_request(object: Value) -> Value {
    request::admission_request(object, None, None, &HARNESS)
}

/// An AdmissionRequest that updates `old_object` to `object`.
pub fn update_request(object: Value, old_object: Value) -> Value {
    request::admission_request(object, Some(old_object), None, &HARNESS)
}

/// Who the harness's requests come from: a cluster admin, as with `kubectl apply`.
const HARNESS: Requester<'static> = Requester {
    uid: "00000000-0000-4000-8000-000000000000",
    username: "kubernetes-admin",
    groups: &["system:masters", "system:authenticated"],
    dry_run: false,
    field_manager: Some("kubectl-client-side-apply"),
};

/// The request with its `object` replaced, e.g. by a policy's output.
pub fn with_object(request: &Value, object: Value) -> Value {
    let mut request = request.clone();
    request["object"] = object;
    request
}

type EvaluateFn = fn(&str, String, &str) -> Result<stsguard_contract::Verdict, String>;

struct Step {
    name: &'static str,
    mutating: bool,
    reads: &'static [cluster::Kind],
    evaluate: EvaluateFn,
    settings: String,
}

/// Policies run in order, as the host runs its configured chain in `enforce`
/// mode: each sees the object as the ones before left it; the first denial
/// stops the chain; warnings and the denial read as the host sends them.
#[derive(Default)]
pub struct Chain {
    steps: Vec<Step>,
    cluster: Cluster,
}

/// What a [`Chain`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainOutcome {
    /// The denial as the user reads it: `policy <p> denied <Kind> <ns>/<name>: <message>`.
    pub denial: Option<String>,
    /// All warnings as the host sends them: prefixed with `stsguard/<policy>: `,
    /// one line each, cut to the host's limits, without repeats.
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
            mutating: P::METADATA.mutating,
            reads: P::READS,
            evaluate: runtime::evaluate::<P>,
            settings,
        });
        self
    }

    /// Answers the policies' cluster reads from `cluster` (an empty one by
    /// default).
    pub fn in_cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = cluster;
        self
    }

    /// Runs the chain on an AdmissionRequest. `Err` names the policy that failed.
    pub fn run(&self, request: &Value) -> Result<ChainOutcome, String> {
        let mut request = request.clone();
        let mut warnings = Vec::new();
        for step in &self.steps {
            let failed = |e: String| format!("policy `{}` failed: {e}", step.name);
            let (rest, object) = wit_arguments(&request);
            let verdict = self
                .cluster
                .run(step.reads, || {
                    (step.evaluate)(&rest, object, &step.settings)
                })
                .map_err(failed)?;
            let outcome = outcome(verdict, step.mutating, &request["object"]).map_err(failed)?;
            text::add_warnings(
                &mut warnings,
                &text::warning_prefix(step.name, false),
                outcome.warnings,
            );
            if !outcome.allowed {
                let message = text::denial_message(outcome.message);
                let denial = text::denied(step.name, &ObjectName::of_request(&request), &message);
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
