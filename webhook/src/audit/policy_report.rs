//! PolicyReports: the audit's findings as cluster objects, one report per
//! namespace, named [`NAME`], in the `wgpolicyk8s.io/v1alpha2` API.
//!
//! **Why wgpolicyk8s.io.** It is the API the tools that show policy results
//! read today: Policy Reporter (its UI, metrics and notifications), Kyverno up
//! to 1.13 and Kubewarden's audit scanner write it. Its successor, OpenReports
//! (`openreports.io/v1alpha1`), has the same shape; moving to it is a rename of
//! the group ([`API_VERSION`]) and of the chart's CRD.
//!
//! ```text
//!  Evaluation ──results_of──► one result per policy that ran on the object
//!                              (pass | warn: would mutate or warns | fail: would deny | error)
//!       │ Reports::add (by namespace)
//!       ▼
//!  Reports::into_reports ──► PolicyReport per namespace, with its summary
//!       │
//!       ▼ Writer::apply: server-side apply, field manager `stsguard-audit`, force
//!  PATCH /apis/wgpolicyk8s.io/v1alpha2/namespaces/NS/policyreports/stsguard-audit
//! ```
//!
//! **A report is the whole picture of its namespace.** Server-side apply with
//! one field manager replaces what that manager wrote before, and `results` is
//! an atomic list: the results of objects deleted or fixed since the last run
//! are gone. A namespace whose StatefulSets are all compliant gets a report
//! with only `pass` results (it is kept rather than deleted, so "audited, all
//! well" is visible, and the audit needs no `delete`). A report is written only
//! when the whole namespace was read: the caller writes none for a run that did
//! not complete, and `stsguard audit` refuses `--write-reports` with a label
//! selector (a report of some objects would replace the report of all).
//!
//! Results are kept in memory until the run ends, a few hundred bytes each.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use kube::Client;
use kube::api::{Patch, PatchParams};
use serde::Serialize;
use serde_json::Value;

use super::list::{describe_kube_error, describe_status, is_transient};
use super::result::add_paths;
use super::{Evaluation, Retry};
use crate::chain::{ModuleIdentity, PolicyRun, RunResult};
use crate::config::Mode;

/// The API group and version of the reports.
pub const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
/// The report's name in each namespace.
pub const NAME: &str = "stsguard-audit";
/// Who writes the reports (server-side apply's field manager).
pub const FIELD_MANAGER: &str = "stsguard-audit";
/// Every result's `source`.
pub const SOURCE: &str = "stsguard";
/// The label every report carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "stsguard");
/// The `policy` of a result for an object the chain could not evaluate at all.
const NO_POLICY: &str = "stsguard";

/// One namespace's report, as it is applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: Metadata,
    pub summary: Summary,
    pub results: Vec<ReportResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metadata {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// Results by outcome; `skip` is part of the API and never used here (a policy
/// that was not run is an `error`: it did not judge the object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pass: u32,
    pub fail: u32,
    pub warn: u32,
    pub error: u32,
    pub skip: u32,
}

/// What one policy made of one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Allowed unchanged, without warnings.
    Pass,
    /// Denied, or would be in monitor mode.
    Fail,
    /// Would change the object, or warns about it.
    Warn,
    /// Failed, or was not run.
    Error,
}

/// One result: one object and one policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportResult {
    pub policy: String,
    pub source: &'static str,
    pub result: Outcome,
    pub message: String,
    pub resources: Vec<ObjectReference>,
    /// `sha256` (the module that ran), `mode`, and for `warn` the `paths` that
    /// would change (a JSON array of JSON pointers).
    pub properties: BTreeMap<String, String>,
    pub timestamp: Timestamp,
}

/// The StatefulSet a result is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// `metav1.Timestamp`: when the object was evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: i32,
}

impl Timestamp {
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            seconds: since.as_secs() as i64,
            nanos: since.subsec_nanos() as i32,
        }
    }
}

/// The results of one evaluation: one per policy that ran on the object (none
/// when no policy applies to it), or one `error` when the object could not be
/// evaluated at all. `modules`: each policy's module by name.
pub fn results_of(
    evaluation: &Evaluation,
    modules: &HashMap<String, ModuleIdentity>,
    timestamp: Timestamp,
) -> Vec<ReportResult> {
    let target = &evaluation.target;
    let resources = vec![ObjectReference {
        api_version: "apps/v1",
        kind: "StatefulSet",
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        uid: target.uid.clone(),
    }];
    let Some((_, decision)) = &evaluation.decided else {
        return vec![ReportResult {
            policy: NO_POLICY.to_string(),
            source: SOURCE,
            result: Outcome::Error,
            message: evaluation.finding.summary(),
            resources,
            properties: BTreeMap::new(),
            timestamp,
        }];
    };
    let mut chain_paths = Vec::new();
    if let Some(patch) = &decision.outcome.patch {
        let patch = serde_json::to_value(patch).expect("a JSON patch serializes");
        add_paths(&mut chain_paths, &patch);
    }
    decision
        .outcome
        .runs
        .iter()
        .map(|run| {
            let (result, message, paths) = judge(run, &chain_paths);
            let mut properties = BTreeMap::new();
            if let Some(module) = modules.get(&*run.policy) {
                properties.insert("sha256".to_string(), module.sha256.clone());
                if let Some(signer) = &module.signer {
                    properties.insert("signer".to_string(), signer.clone());
                }
            }
            let mode = match run.mode {
                Mode::Enforce => "enforce",
                Mode::Monitor => "monitor",
            };
            properties.insert("mode".to_string(), mode.to_string());
            if !paths.is_empty() {
                let paths = serde_json::to_string(&paths).expect("strings serialize");
                properties.insert("paths".to_string(), paths);
            }
            ReportResult {
                policy: run.policy.to_string(),
                source: SOURCE,
                result,
                message,
                resources: resources.clone(),
                properties,
                timestamp,
            }
        })
        .collect()
}

/// One run's outcome, message and the paths it would change. An enforced
/// mutation's paths are those of the chain's patch (the policies change the
/// object in turn, and the chain yields one patch); a monitor-mode policy's are
/// its own would-be patch's.
fn judge(run: &PolicyRun, chain_paths: &[String]) -> (Outcome, String, Vec<String>) {
    let monitor = run.mode == Mode::Monitor;
    let not_enforced = if monitor {
        " (monitor mode, not enforced)"
    } else {
        ""
    };
    match &run.result {
        RunResult::Failed(error) => (Outcome::Error, format!("failed: {error}"), Vec::new()),
        RunResult::Skipped(refusal) => (
            Outcome::Error,
            format!("was not run: {refusal}"),
            Vec::new(),
        ),
        RunResult::Denied => {
            let message = run.message.as_deref().unwrap_or("no message");
            let message = if monitor {
                format!("would deny{not_enforced}: {message}")
            } else {
                message.to_string()
            };
            (Outcome::Fail, message, Vec::new())
        }
        RunResult::Allowed { mutated } => {
            let mut paths = Vec::new();
            if *mutated {
                match run
                    .would_patch
                    .as_deref()
                    .map(serde_json::from_str::<Value>)
                {
                    Some(Ok(patch)) => add_paths(&mut paths, &patch),
                    _ => paths.extend(chain_paths.iter().cloned()),
                }
            }
            if paths.is_empty() && run.warnings.is_empty() {
                return (Outcome::Pass, "allowed unchanged".to_string(), paths);
            }
            let mut parts = Vec::new();
            if !paths.is_empty() {
                parts.push(format!("would change {}{not_enforced}", paths.join(", ")));
            }
            if !run.warnings.is_empty() {
                parts.push(format!("warns: {}", run.warnings.join("; ")));
            }
            (Outcome::Warn, parts.join("; "), paths)
        }
    }
}

/// The results of a run, by namespace, until it ends.
#[derive(Debug, Default)]
pub struct Reports {
    modules: HashMap<String, ModuleIdentity>,
    namespaces: BTreeMap<String, Vec<ReportResult>>,
}

impl Reports {
    /// `modules`: each policy's module by name.
    pub fn new(modules: HashMap<String, ModuleIdentity>) -> Self {
        Self {
            modules,
            namespaces: BTreeMap::new(),
        }
    }

    /// `namespace` gets a report even if no StatefulSet in it is listed: the
    /// audit of one namespace says so when the last one is gone.
    pub fn expect(&mut self, namespace: &str) {
        self.namespaces.entry(namespace.to_string()).or_default();
    }

    pub fn add(&mut self, evaluation: &Evaluation) {
        if evaluation.target.namespace.is_empty() {
            return; // not a namespaced object: there is no report to put it in
        }
        let results = results_of(evaluation, &self.modules, Timestamp::now());
        self.namespaces
            .entry(evaluation.target.namespace.clone())
            .or_default()
            .extend(results);
    }

    /// One report per namespace, in namespace order.
    pub fn into_reports(self) -> Vec<PolicyReport> {
        self.namespaces
            .into_iter()
            .map(|(namespace, results)| PolicyReport::new(namespace, results))
            .collect()
    }
}

impl PolicyReport {
    pub fn new(namespace: String, results: Vec<ReportResult>) -> Self {
        let mut summary = Summary::default();
        for result in &results {
            match result.result {
                Outcome::Pass => summary.pass += 1,
                Outcome::Fail => summary.fail += 1,
                Outcome::Warn => summary.warn += 1,
                Outcome::Error => summary.error += 1,
            }
        }
        let (key, value) = MANAGED_BY;
        Self {
            api_version: API_VERSION,
            kind: "PolicyReport",
            metadata: Metadata {
                name: NAME.to_string(),
                namespace,
                labels: BTreeMap::from([(key.to_string(), value.to_string())]),
            },
            summary,
            results,
        }
    }

    pub fn namespace(&self) -> &str {
        &self.metadata.namespace
    }
}

/// Why a report could not be written; the message says what to do. The API
/// server's own message is part of it, never also a `source()` (docs/design.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "could not write PolicyReport {namespace}/{NAME}: the PolicyReport CRD (policyreports.wgpolicyk8s.io, version v1alpha2) is not installed: install the chart's crds/ (kubectl apply -f deploy/charts/stsguard/crds/), or the wg-policy CRDs Policy Reporter, Kyverno or Kubewarden install, or run the audit without --write-reports (the API server said: {message})"
    )]
    CrdMissing { namespace: String, message: String },
    #[error(
        "could not write PolicyReport {namespace}/{NAME} (403 Forbidden): grant the audit's user `get, create, patch, update` on policyreports.wgpolicyk8s.io in that namespace or cluster-wide (the chart's audit ClusterRole does) (the API server said: {message})"
    )]
    Forbidden { namespace: String, message: String },
    #[error(
        "could not write PolicyReport {namespace}/{NAME}: the API server refused the audit's credentials (401 Unauthorized) (the API server said: {message})"
    )]
    Unauthorized { namespace: String, message: String },
    #[error(
        "could not write PolicyReport {namespace}/{NAME}: gave up after {attempts} attempts: {cause}"
    )]
    GaveUp {
        namespace: String,
        attempts: u32,
        cause: String,
    },
    #[error("could not write PolicyReport {namespace}/{NAME}: {cause}")]
    Failed { namespace: String, cause: String },
}

impl ReportError {
    /// Whether every other report would fail the same way (no CRD, no valid
    /// credentials): no use trying them.
    pub fn applies_to_all(&self) -> bool {
        matches!(self, Self::CrdMissing { .. } | Self::Unauthorized { .. })
    }
}

/// Writes reports with server-side apply.
#[derive(Clone)]
pub struct Writer {
    client: Client,
    retry: Retry,
}

impl Writer {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            retry: Retry::default(),
        }
    }

    pub fn with_retry(self, retry: Retry) -> Self {
        Self { retry, ..self }
    }

    /// Applies `report` (field manager [`FIELD_MANAGER`], forced: the audit
    /// owns its reports), retrying transient errors.
    pub async fn apply(&self, report: &PolicyReport) -> Result<(), ReportError> {
        let namespace = report.namespace().to_string();
        let failed = |cause: String| ReportError::Failed {
            namespace: namespace.clone(),
            cause,
        };
        let path = format!("/apis/{API_VERSION}/namespaces/{namespace}/policyreports");
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = kube::core::Request::new(&path)
                .patch(NAME, &params, &Patch::Apply(report))
                .map_err(|error| failed(format!("could not build the request: {error}")))?;
            let error = match self.client.request::<Value>(request).await {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if !is_transient(&error) {
                return Err(explain(&namespace, error));
            }
            let cause = describe_kube_error(&error);
            if attempt >= self.retry.attempts {
                return Err(ReportError::GaveUp {
                    namespace,
                    attempts: attempt,
                    cause,
                });
            }
            let delay = self.retry.delay(attempt);
            tracing::warn!(
                namespace = %namespace,
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                error = %cause,
                "audit: writing the PolicyReport failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// A permanent error, with what to do about it.
fn explain(namespace: &str, error: kube::Error) -> ReportError {
    let namespace = namespace.to_string();
    let kube::Error::Api(status) = error else {
        return ReportError::Failed {
            namespace,
            cause: describe_kube_error(&error),
        };
    };
    let message = status.message.clone();
    match status.code {
        401 => ReportError::Unauthorized { namespace, message },
        403 => ReportError::Forbidden { namespace, message },
        // A missing namespace is a 404 too; the API server names it.
        404 if !message.contains(&format!("namespaces \"{namespace}\" not found")) => {
            ReportError::CrdMissing { namespace, message }
        }
        _ => ReportError::Failed {
            namespace,
            cause: describe_status(&status),
        },
    }
}

#[cfg(test)]
mod tests;
