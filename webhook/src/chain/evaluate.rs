//! Running one review through the loaded chain: one [`Policy::run`] step per
//! policy, in order, each seeing the object as the ones before left it.

use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;
use stsguard_contract::{Verdict, text};

use super::load::{Policy, PolicySet};
use super::patch::Changes;
use super::run::{PolicyRun, RunResult};
use crate::config::Mode;
use crate::engine::{CallContext, EvalError, Limits};
use crate::review::ReviewRequest;

/// Which policies of the set a review runs.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    All,
    /// Only the named one (`POST /mutate/{policy}`).
    Only(&'a str),
}

impl<'a> From<Option<&'a str>> for Selection<'a> {
    /// `None`: the whole chain; a name: that policy alone.
    fn from(only: Option<&'a str>) -> Self {
        only.map_or(Self::All, Self::Only)
    }
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
    /// Changes to apply; `None` when the object is unchanged (or denied).
    pub patch: Option<json_patch::Patch>,
    /// Every run's warnings, prefixed and held to what the API server passes on.
    pub warnings: Vec<String>,
    pub runs: Vec<PolicyRun>,
}

impl PolicySet {
    /// Runs `request` through the selected policies. Each policy gets at most
    /// its own timeout and never more than what is left until `deadline`.
    ///
    /// The policies change `request.object` in place, and it is left as the API
    /// server will store it: with every enforced mutation when the chain allows
    /// (the patch says the same), as it came when the chain denies. Changing it
    /// in place rather than a copy saves copying and dropping the object
    /// (docs/performance.md, "Instructions per review").
    pub fn evaluate(
        &self,
        request: &mut ReviewRequest,
        selection: Selection<'_>,
        deadline: Instant,
    ) -> ChainOutcome {
        // Deletions and connections carry no object to fix; subresources
        // (status, scale) are not the object the policies are written for.
        if !request.operation.has_object() || !request.sub_resource.is_empty() {
            return ChainOutcome::default();
        }
        let selected = self.selected(selection);
        let ReviewRequest {
            uid,
            kind,
            raw,
            object,
            old_object,
            ..
        } = request;
        let mut changes = Changes::default();
        let mut input = Input::new(uid, RequestWithoutObject { raw, old_object });
        let mut runs = Vec::new();
        for policy in selected.filter(|policy| policy.targets(kind)) {
            let run = policy.run(&mut input, object, &mut changes, deadline);
            let decisive = run.denies();
            runs.push(run);
            if decisive {
                break;
            }
        }
        ChainOutcome::of(runs, object, changes, uid)
    }
}

impl ChainOutcome {
    /// The outcome of these runs, which left the object as `object`, changed
    /// only at the places `changes` recorded; a denial puts it back as it was.
    fn of(runs: Vec<PolicyRun>, object: &mut Value, changes: Changes, uid: &str) -> Self {
        let mut warnings = Vec::new();
        for run in &runs {
            text::add_warnings(&mut warnings, &run.warning_prefix(), run.user_warnings());
        }
        let denial = runs.last().and_then(|run| {
            run.denial_message(uid).map(|message| Denial {
                policy: run.policy.to_string(),
                message,
            })
        });
        let mut outcome = Self {
            denial,
            warnings,
            runs,
            ..Self::default()
        };
        if outcome.denial.is_some() {
            changes.restore(object);
        } else {
            let patch = changes.diff(object);
            outcome.patch = (!patch.0.is_empty()).then_some(patch);
        }
        outcome
    }
}

/// What the policies get, serialized once per review (the request) and once
/// per version of the object, not once per policy.
struct Input<'a> {
    /// The review's, for logs and the policy's call context.
    uid: &'a str,
    request: RequestWithoutObject<'a>,
    request_text: Option<String>,
    object_text: Option<String>,
}

impl<'a> Input<'a> {
    fn new(uid: &'a str, request: RequestWithoutObject<'a>) -> Self {
        Self {
            uid,
            request,
            request_text: None,
            object_text: None,
        }
    }

    /// The request without its object, and the object as it is now.
    fn texts(&mut self, object: &Value) -> (&str, &str) {
        let request = self.request;
        let rest = self.request_text.get_or_insert_with(|| to_json(&request));
        let object = self.object_text.get_or_insert_with(|| to_json(object));
        (rest, object)
    }

    /// The object changed: serialize it again for the next policy.
    fn object_changed(&mut self) {
        self.object_text = None;
    }
}

impl Policy {
    /// The step: evaluate this policy on the object as it is now and apply what
    /// it says — in enforce mode to the chain's object (in place; nothing changes
    /// if it fails; what it held where the policy sets values is kept in
    /// `changes`), in monitor mode to a scratch copy that only yields the patch
    /// it would have caused.
    fn run(
        &self,
        input: &mut Input<'_>,
        object: &mut Value,
        changes: &mut Changes,
        deadline: Instant,
    ) -> PolicyRun {
        let started = Instant::now();
        let mode = self.config.mode;
        let mut run = PolicyRun {
            policy: self.name.clone(),
            mode,
            failure_policy: self.config.failure_policy,
            duration: Duration::ZERO,
            result: RunResult::Allowed { mutated: false },
            warnings: Vec::new(),
            message: None,
            would_patch: None,
        };
        let mutating = self.metadata().mutating;
        let permit = match self.guard.admit(&self.name, started) {
            Ok(permit) => permit,
            Err(refusal) => {
                tracing::debug!(uid = %input.uid, policy = %self.name, %refusal, "policy not run");
                run.result = RunResult::Skipped(refusal);
                return run;
            }
        };
        let settled = self
            .call(input, object, deadline)
            .and_then(|verdict| match mode {
                Mode::Enforce => {
                    let applied = changes.apply(verdict, mutating, object)?;
                    if applied.changed {
                        input.object_changed();
                    }
                    Ok(applied)
                }
                Mode::Monitor => {
                    let (applied, patch) = Changes::would_apply(verdict, mutating, object)?;
                    run.would_patch = patch.map(|patch| to_json(&patch));
                    Ok(applied)
                }
            });
        permit.finish(&self.name, settled.as_ref().map(drop), Instant::now());
        run.result = match settled {
            Ok(applied) => {
                run.warnings = applied.warnings;
                if applied.allowed {
                    RunResult::Allowed {
                        mutated: applied.changed,
                    }
                } else {
                    run.message = Some(text::denial_message(applied.message));
                    RunResult::Denied
                }
            }
            Err(error) => {
                tracing::warn!(
                    uid = %input.uid,
                    policy = %self.name,
                    %error,
                    "policy evaluation failed"
                );
                RunResult::Failed(error)
            }
        };
        run.duration = started.elapsed();
        run
    }

    /// Evaluates the policy in a fresh instance, within what is left of the
    /// review's deadline.
    fn call(
        &self,
        input: &mut Input<'_>,
        object: &Value,
        deadline: Instant,
    ) -> Result<Verdict, EvalError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(EvalError::Timeout(Duration::ZERO));
        }
        let limits = Limits {
            timeout: self.limits.timeout.min(left),
            ..self.limits
        };
        let context = CallContext {
            policy: self.name.clone(),
            uid: input.uid.into(),
            cluster: self.cluster.clone(),
        };
        let (request, object) = input.texts(object);
        self.module
            .evaluate(request, object, &self.settings, &limits, &context)
    }
}

/// The request as a policy gets it: the original without its `object` (WIT
/// `evaluate` takes the object apart), with `oldObject` written back as the API
/// server sent it. Serialized once per review, straight from the borrowed
/// request: cloning it showed up in profiles.
#[derive(Clone, Copy)]
struct RequestWithoutObject<'a> {
    /// The request's other members ([`ReviewRequest::raw`]).
    raw: &'a Value,
    old_object: &'a Option<Box<RawValue>>,
}

impl serde::Serialize for RequestWithoutObject<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.raw.as_object().into_iter().flatten();
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields {
            map.serialize_entry(key, value)?;
        }
        if let Some(old_object) = self.old_object {
            map.serialize_entry("oldObject", old_object)?;
        }
        map.end()
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("a JSON value serializes")
}
