//! The policy chain: the configured policies, loaded, and how one request runs
//! through them.
//!
//! ```text
//!   object ─► policy 1 ─► object' ─► policy 2 ─► object'' ─► ... ─► final
//!              │ enforce: denial stops the chain; mutation is passed on
//!              │ monitor: never denies, never mutates; would-be effects → warnings
//!              └ error/timeout: failurePolicy fail → deny, ignore → skip + warning
//!   patch = json_patch::diff(object, final), omitted when empty
//! ```
//!
//! A [`PolicySet`] is immutable once loaded; configuration changes build a new
//! one and swap it in whole (see `reload`), so a review always runs against one
//! consistent set.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::admission::{Operation, ReviewRequest};
use crate::builtin;
use crate::config::{Config, FailurePolicy, Mode, ModuleSource, PolicyConfig};
use crate::engine::{
    self, CallContext, Engine, EvalError, Limits, Metadata, Module, Mutation, Verdict,
};
use crate::mutation;

mod user_text;

/// One configured, loaded policy.
#[derive(Debug)]
pub struct Policy {
    pub config: PolicyConfig,
    name: Arc<str>,
    module: Arc<Module>,
    settings: String,
    limits: Limits,
}

impl Policy {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn metadata(&self) -> &Metadata {
        self.module.metadata()
    }

    /// The compiled component behind this policy.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Whether the policy wants to see this kind of object.
    fn targets(&self, request: &ReviewRequest) -> bool {
        let kind = &request.kind;
        self.metadata().targets.iter().any(|target| {
            target.group == kind.group
                && (target.version == "*" || target.version == kind.version)
                && (target.kind == "*" || target.kind == kind.kind)
        })
    }
}

/// The loaded chain, in evaluation order.
#[derive(Debug, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
}

/// Which policies of the set a review runs.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    All,
    /// Only the named one (`POST /mutate/{policy}`).
    Only(&'a str),
}

/// Why a policy set could not be loaded; names the policy and says what to do.
/// Each message ends with its cause, which is therefore not also a `source()`:
/// log lines show only the message, and `{:#}` chains would print the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("policy `{policy}`: could not read its module {path}: {cause}")]
    ReadModule {
        policy: String,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("policy `{policy}` ({module}): {cause}")]
    Module {
        policy: String,
        module: String,
        cause: engine::LoadError,
    },
    #[error("policy `{policy}` ({module}): its settings are invalid: {message}")]
    Settings {
        policy: String,
        module: String,
        message: String,
    },
    #[error(
        "policy `{policy}`: memoryLimit {limit} is above the largest allowed, {}Mi",
        engine::MAX_MEMORY_LIMIT >> 20
    )]
    MemoryLimit { policy: String, limit: String },
}

/// What one policy did in one review: for logs and metrics.
#[derive(Debug, Clone)]
pub struct PolicyRun {
    pub policy: Arc<str>,
    pub mode: Mode,
    pub duration: Duration,
    pub result: RunResult,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunResult {
    Allowed { mutated: bool },
    Denied,
    Failed(EvalError),
}

/// A denial that takes effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub policy: String,
    pub message: String,
}

/// The result of running a request through the chain.
#[derive(Debug, Clone, Default)]
pub struct ChainOutcome {
    pub denial: Option<Denial>,
    /// Changes to apply; `None` when the object is unchanged.
    pub patch: Option<json_patch::Patch>,
    /// The object after every enforced mutation; `None` when no policy changed it.
    pub object: Option<Value>,
    pub warnings: Vec<String>,
    pub runs: Vec<PolicyRun>,
}

impl PolicySet {
    /// Loads every policy of `config`: reads and compiles each distinct module
    /// once, checks each policy's settings with the policy itself.
    pub fn load(engine: &Engine, config: &Config) -> Result<Self, LoadError> {
        let mut modules: HashMap<[u8; 32], Arc<Module>> = HashMap::new();
        let mut policies = Vec::with_capacity(config.policies.len());
        for policy_config in &config.policies {
            let name = policy_config.name.clone();
            let module_name = policy_config.module.to_string();
            if policy_config.memory_limit.0 > engine::MAX_MEMORY_LIMIT {
                return Err(LoadError::MemoryLimit {
                    policy: name,
                    limit: policy_config.memory_limit.to_string(),
                });
            }
            let bytes: std::borrow::Cow<'static, [u8]> = match &policy_config.module {
                ModuleSource::Builtin(builtin) => builtin::module(builtin)
                    .expect("built-in names are checked when the config is parsed")
                    .into(),
                ModuleSource::File(path) => std::fs::read(path)
                    .map_err(|cause| LoadError::ReadModule {
                        policy: name.clone(),
                        path: path.clone(),
                        cause,
                    })?
                    .into(),
            };
            let digest: [u8; 32] = Sha256::digest(&bytes).into();
            let module = match modules.get(&digest) {
                Some(module) => module.clone(),
                None => {
                    let started = Instant::now();
                    let module =
                        Arc::new(engine.load(&bytes).map_err(|cause| LoadError::Module {
                            policy: name.clone(),
                            module: module_name.clone(),
                            cause,
                        })?);
                    tracing::info!(
                        policy = %name,
                        module = %module_name,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "policy module loaded"
                    );
                    modules.insert(digest, module.clone());
                    module
                }
            };
            let settings = policy_config.settings.to_string();
            let limits = Limits {
                timeout: policy_config.timeout,
                memory_bytes: policy_config.memory_limit.0,
            };
            let name: Arc<str> = name.into();
            let context = CallContext {
                policy: name.clone(),
                uid: "validate-settings".into(),
            };
            module
                .validate_settings(&settings, &limits, &context)
                .map_err(|error| LoadError::Settings {
                    policy: name.to_string(),
                    module: module_name.clone(),
                    message: match error {
                        EvalError::Policy(message) => message,
                        other => format!("the policy's settings check {other}"),
                    },
                })?;
            policies.push(Policy {
                config: policy_config.clone(),
                name,
                module,
                settings,
                limits,
            });
        }
        Ok(Self { policies })
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name() == name)
    }

    /// Runs `request` through the selected policies. Each policy gets at most
    /// its own timeout and never more than what is left until `deadline`.
    pub fn evaluate(
        &self,
        request: &ReviewRequest,
        selection: Selection<'_>,
        deadline: Instant,
    ) -> ChainOutcome {
        let mut outcome = ChainOutcome::default();
        // Deletions and connections carry no object to fix; subresources
        // (status, scale) are not the object the policies are written for.
        if matches!(request.operation, Operation::Delete | Operation::Connect)
            || !request.sub_resource.is_empty()
        {
            return outcome;
        }
        let selected = self.policies.iter().filter(|policy| match selection {
            Selection::All => true,
            Selection::Only(name) => policy.name() == name,
        });
        let original = &request.raw["object"];
        // Most reviews change nothing: borrow until a policy mutates, so those
        // pay for neither a copy of the object nor a diff.
        let mut current = Cow::Borrowed(original);
        // What the policies get, serialized once per review (the request) and once
        // per version of the object, not once per policy.
        let mut request_text: Option<String> = None;
        let mut object_text: Option<String> = None;
        for policy in selected.filter(|policy| policy.targets(request)) {
            let started = Instant::now();
            let rest = request_text.get_or_insert_with(|| to_json(&RequestWithoutObject(request)));
            let object = object_text.get_or_insert_with(|| to_json(&*current));
            let result = run_one(policy, (rest, object), request, deadline)
                .and_then(|verdict| settle(verdict, policy.config.mode, &mut current));
            let duration = started.elapsed();
            let record = |result: RunResult| PolicyRun {
                policy: policy.name.clone(),
                mode: policy.config.mode,
                duration,
                result,
            };
            match (result, policy.config.mode) {
                (Ok(verdict), Mode::Enforce) => {
                    outcome.warn(policy, None, verdict.warnings);
                    if !verdict.allowed {
                        outcome.runs.push(record(RunResult::Denied));
                        let message = verdict.message.unwrap_or_else(|| "denied".into());
                        outcome.denial = Some(Denial {
                            policy: policy.name.to_string(),
                            message: user_text::denial_message(message),
                        });
                        return outcome;
                    }
                    if verdict.mutated {
                        object_text = None;
                    }
                    outcome.runs.push(record(RunResult::Allowed {
                        mutated: verdict.mutated,
                    }));
                }
                (Ok(verdict), Mode::Monitor) => {
                    let tag = Some("monitor");
                    outcome.warn(policy, tag, verdict.warnings);
                    if !verdict.allowed {
                        let message = verdict.message.unwrap_or_else(|| "denied".into());
                        outcome.warn(policy, tag, [format!("would deny: {message}")]);
                        outcome.runs.push(record(RunResult::Denied));
                        continue;
                    }
                    if let Some(patch) = verdict.would_patch {
                        outcome.warn(policy, tag, [format!("would apply patch {patch}")]);
                    }
                    outcome.runs.push(record(RunResult::Allowed {
                        mutated: verdict.mutated,
                    }));
                }
                (Err(error), mode) => {
                    tracing::warn!(
                        uid = %request.uid,
                        policy = %policy.name,
                        %error,
                        "policy evaluation failed"
                    );
                    outcome.runs.push(record(RunResult::Failed(error.clone())));
                    let reason = error.reason().replace('_', " ");
                    if mode == Mode::Enforce && policy.config.failure_policy == FailurePolicy::Fail
                    {
                        outcome.denial = Some(Denial {
                            policy: policy.name.to_string(),
                            message: format!(
                                "the policy could not evaluate this object ({reason}); its \
                                 failurePolicy is fail. The stsguard log has details under uid {}",
                                request.uid
                            ),
                        });
                        return outcome;
                    }
                    let tag = (mode == Mode::Monitor).then_some("monitor");
                    outcome.warn(
                        policy,
                        tag,
                        [format!(
                            "the policy could not evaluate this object ({reason}) and was skipped"
                        )],
                    );
                }
            }
        }
        if let std::borrow::Cow::Owned(object) = current {
            let patch = json_patch::diff(original, &object);
            if !patch.0.is_empty() {
                outcome.patch = Some(patch);
                outcome.object = Some(object);
            }
        }
        outcome
    }
}

impl ChainOutcome {
    fn warn(
        &mut self,
        policy: &Policy,
        tag: Option<&str>,
        warnings: impl IntoIterator<Item = String>,
    ) {
        let prefix = match tag {
            Some(tag) => format!("stsguard/{} ({tag}): ", policy.name),
            None => format!("stsguard/{}: ", policy.name),
        };
        user_text::add_warnings(&mut self.warnings, &prefix, warnings);
    }
}

/// A policy's verdict, checked and parsed.
#[derive(Debug)]
struct CheckedVerdict {
    allowed: bool,
    message: Option<String>,
    warnings: Vec<String>,
    /// What the policy would change, until [`settle`] applies it.
    mutation: Option<Mutation>,
    /// Whether the object changed (enforce) or would have (monitor).
    mutated: bool,
    /// Monitor mode: the patch the policy would have caused.
    would_patch: Option<String>,
}

/// Applies an allowing verdict's mutation: in enforce mode to the chain's object
/// (in place; nothing changes if it fails), in monitor mode to a scratch copy
/// that only yields the patch it would have caused.
fn settle(
    mut verdict: CheckedVerdict,
    mode: Mode,
    current: &mut Cow<'_, Value>,
) -> Result<CheckedVerdict, EvalError> {
    let Some(mutation) = verdict.mutation.take().filter(|_| verdict.allowed) else {
        return Ok(verdict);
    };
    match mode {
        Mode::Enforce => verdict.mutated = mutation::apply(current, mutation)?,
        Mode::Monitor => {
            let mut scratch = Cow::Borrowed(&**current);
            if mutation::apply(&mut scratch, mutation)? {
                let patch = json_patch::diff(current, &scratch);
                verdict.would_patch =
                    Some(serde_json::to_string(&patch).expect("a patch serializes"));
                verdict.mutated = true;
            }
        }
    }
    Ok(verdict)
}

/// The request as a policy gets it: the original without its `object` (WIT
/// `evaluate` takes the object apart), with `oldObject` written back as the API
/// server sent it. Serialized once per review, straight from the borrowed
/// request: cloning it showed up in profiles.
struct RequestWithoutObject<'a>(&'a ReviewRequest);

impl serde::Serialize for RequestWithoutObject<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.0.raw.as_object().into_iter().flatten();
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields.filter(|(key, _)| *key != "object") {
            map.serialize_entry(key, value)?;
        }
        if let Some(old_object) = &self.0.old_object {
            map.serialize_entry("oldObject", old_object)?;
        }
        map.end()
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("a JSON value serializes")
}

/// Evaluates one policy on `input` (the request without its object, and the
/// object, both as JSON); [`settle`] applies what it returns.
fn run_one(
    policy: &Policy,
    input: (&str, &str),
    request: &ReviewRequest,
    deadline: Instant,
) -> Result<CheckedVerdict, EvalError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(EvalError::Timeout(Duration::ZERO));
    }
    let limits = Limits {
        timeout: policy.limits.timeout.min(left),
        ..policy.limits
    };
    let context = CallContext {
        policy: policy.name.clone(),
        uid: request.uid.as_str().into(),
    };
    let verdict = policy
        .module
        .evaluate(input.0, input.1, &policy.settings, &limits, &context)?;
    checked(verdict, policy.metadata().mutating)
}

/// The verdict, with a mutation only from a policy that may mutate.
fn checked(verdict: Verdict, mutating: bool) -> Result<CheckedVerdict, EvalError> {
    if verdict.mutation.is_some() && !mutating {
        return Err(EvalError::Policy(
            "returned a mutation but declares itself non-mutating".into(),
        ));
    }
    Ok(CheckedVerdict {
        allowed: verdict.allowed,
        message: verdict.message,
        warnings: verdict.warnings,
        mutation: verdict.mutation,
        mutated: false,
        would_patch: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::parse_review;
    use crate::engine::EngineOptions;
    use serde_json::json;
    use std::sync::OnceLock;

    /// One engine for all tests, with a cache so the scripted policy compiles once.
    fn engine() -> &'static Engine {
        static ENGINE: OnceLock<Engine> = OnceLock::new();
        ENGINE.get_or_init(|| {
            Engine::new(&EngineOptions {
                cache_dir: Some(crate::testing::cache_dir()),
                ..EngineOptions::default()
            })
            .unwrap()
        })
    }

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
        parse_review(&serde_json::to_vec(&body).unwrap()).unwrap()
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
        let outcome = set.evaluate(&request("CREATE"), Selection::All, soon());
        assert_eq!(outcome.denial, None);
        let object = outcome.object.unwrap();
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
        let outcome = set.evaluate(&request("CREATE"), Selection::All, soon());
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
        let object = outcome.object.unwrap();
        assert_eq!(object["metadata"]["labels"], json!({"step": "one"}));
        assert_eq!(object["metadata"]["name"], "web");
        assert_eq!(
            object["spec"],
            json!({"replicas": 3, "aFieldFromTheFuture": {"x": 1}, "template": {"spec": {"containers": [
                {"name": "app", "readinessProbe": {"tcpSocket": {"port": 80}}}]}}})
        );
    }

    #[test]
    fn a_non_mutating_policy_may_not_mutate() {
        // The host's side of the check: a verdict with a mutation from a policy
        // that declared `mutating: false`.
        let verdict = engine::Verdict {
            allowed: true,
            message: None,
            warnings: vec![],
            mutation: Some(engine::Mutation::Set(vec![])),
        };
        let error = checked(verdict, false).unwrap_err();
        assert!(error.to_string().contains("non-mutating"), "{error}");
    }

    #[test]
    fn an_enforced_denial_stops_the_chain_and_names_the_policy() {
        let set = chain(
            "policies:
  - {name: gate, module: SCRIPTED, settings: {behaviour: deny, message: no thanks}}
  - {name: later, module: SCRIPTED, settings: {behaviour: label, key: a, value: b}}",
        );
        let outcome = set.evaluate(&request("CREATE"), Selection::All, soon());
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
        let outcome = set.evaluate(&request("CREATE"), Selection::All, soon());
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
        let outcome = set.evaluate(&request("CREATE"), Selection::All, soon());
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
        let outcome = set.evaluate(&request("CREATE"), Selection::All, soon());
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
        assert_eq!(
            outcome.object.unwrap()["metadata"]["labels"]["still"],
            "works"
        );
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
            let outcome = set.evaluate(&request("CREATE"), Selection::All, soon());
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
            &request("CREATE"),
            Selection::All,
            Instant::now() + Duration::from_millis(100),
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(outcome.denial.unwrap().policy, "looper");
    }

    #[test]
    fn bad_output_is_a_policy_error() {
        let set = chain(
            "policies:
  - {name: garbled, module: SCRIPTED, settings: {behaviour: wrong-json}}",
        );
        let outcome = set.evaluate(&request("CREATE"), Selection::All, soon());
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
        let outcome = set.evaluate(&request("DELETE"), Selection::All, soon());
        assert!(outcome.denial.is_none() && outcome.runs.is_empty());
        let mut scale = request("UPDATE");
        scale.sub_resource = "scale".into();
        assert!(set.evaluate(&scale, Selection::All, soon()).runs.is_empty());
        let mut pod = request("CREATE");
        pod.kind.group = String::new();
        pod.kind.kind = "Pod".into();
        assert!(set.evaluate(&pod, Selection::All, soon()).runs.is_empty());
    }

    #[test]
    fn selection_runs_one_policy() {
        let set = chain(
            "policies:
  - {name: gate, module: SCRIPTED, settings: {behaviour: deny, message: no}}
  - {name: labeller, module: SCRIPTED, settings: {behaviour: label, key: a, value: b}}",
        );
        let outcome = set.evaluate(&request("CREATE"), Selection::Only("labeller"), soon());
        assert!(outcome.denial.is_none());
        assert!(outcome.patch.is_some());
    }

    #[test]
    fn guest_output_does_not_disturb_evaluation() {
        let set = chain(
            "policies: [{name: chatty, module: SCRIPTED, settings: {behaviour: print, message: hello}}]",
        );
        let outcome = set.evaluate(&request("CREATE"), Selection::All, soon());
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
        let (outcome, lines) = logged(|| set.evaluate(&request("CREATE"), Selection::All, soon()));
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
        let outcome = set.evaluate(&request("CREATE"), Selection::All, soon());
        let denial = outcome.denial.unwrap().message;
        assert_eq!(denial.chars().count(), user_text::MAX_DENIAL_CHARS);
        assert!(denial.starts_with("no no") && denial.ends_with('…'));
    }
}
