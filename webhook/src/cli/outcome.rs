//! One decision as a machine reads it: `eval -o json|yaml` prints these, and
//! `stsguard test` checks its expectations against the same fields — so a
//! suite's expected values can be copied from `eval -o yaml`.

use serde::Serialize;
use serde_json::Value;

use crate::admission::Decision;
use crate::chain::{PolicyRun, RunResult};
use crate::config::Mode;
use crate::review::ReviewRequest;

/// What the chain did with one object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionReport {
    /// Where the object came from: `file#document`, or a test case's name.
    pub source: String,
    /// `StatefulSet default/web`.
    pub object: String,
    pub operation: String,
    pub allowed: bool,
    /// The denial, as kubectl would print it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The warnings the API server would pass on, prefixed by policy.
    pub warnings: Vec<String>,
    /// The RFC 6902 patch the webhook would return; empty when unchanged.
    pub patch: Value,
    /// The object as the chain left it (the patch applied); absent when denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutated: Option<Value>,
    /// Each policy's part, in chain order.
    pub policies: Vec<PolicyReport>,
}

/// One policy's part in a decision.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub name: String,
    pub mode: &'static str,
    /// `allowed`, `mutated`, `denied`, `failed` (an error, trap, time-out) or
    /// `skipped` (not run: circuit open, bulkhead full).
    pub result: &'static str,
    /// The policy's own warnings, as it returned them (not prefixed).
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why it failed or was not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: f64,
}

impl DecisionReport {
    pub fn new(source: String, request: &ReviewRequest, decision: &Decision) -> Self {
        let Decision { response, outcome } = decision;
        let allowed = response.allowed;
        let patch = outcome
            .patch
            .as_ref()
            .map(|patch| serde_json::to_value(patch).expect("a JSON patch serializes"))
            .unwrap_or_else(|| Value::Array(Vec::new()));
        Self {
            source,
            object: request.object_name().to_string(),
            operation: request.operation.as_str().to_string(),
            allowed,
            message: response
                .status
                .as_ref()
                .filter(|_| !allowed)
                .map(|status| status.message.clone()),
            warnings: response.warnings.clone(),
            patch,
            // `decide` left the object as the API server would store it.
            mutated: allowed.then(|| request.object.clone()),
            policies: outcome.runs.iter().map(PolicyReport::new).collect(),
        }
    }
}

impl PolicyReport {
    fn new(run: &PolicyRun) -> Self {
        let (result, error) = match &run.result {
            RunResult::Allowed { mutated: false } => ("allowed", None),
            RunResult::Allowed { mutated: true } => ("mutated", None),
            RunResult::Denied => ("denied", None),
            RunResult::Failed(error) => ("failed", Some(error.to_string())),
            RunResult::Skipped(refusal) => ("skipped", Some(refusal.to_string())),
        };
        Self {
            name: run.policy.to_string(),
            mode: match run.mode {
                Mode::Enforce => "enforce",
                Mode::Monitor => "monitor",
            },
            result,
            warnings: run.warnings.clone(),
            message: run.message.clone(),
            error,
            duration_ms: run.duration.as_secs_f64() * 1e3,
        }
    }
}
