//! Prometheus metrics, all named `stsguard_*` with units in the name, plus the
//! standard `process_*` ones ([`process`]).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `stsguard_reviews_total` | `outcome` = allowed, patched, denied, invalid, error (stsguard failed); `operation` = CREATE, UPDATE, DELETE, CONNECT, unknown; `kind` (a kind a loaded policy names, else `other`); `dry_run` | reviews answered |
//! | `stsguard_review_duration_seconds` | | whole review, parse to answer |
//! | `stsguard_policy_evaluations_total` | `policy`, `mode` = enforce, monitor; `result` = allowed, mutated, denied, failed, skipped (circuit open or bulkhead full) | what each policy's evaluation came to (monitor: what it would have done) |
//! | `stsguard_policy_evaluation_duration_seconds` | `policy` | one policy evaluation, fresh instance included |
//! | `stsguard_policy_errors_total` | `policy`, `reason` = timeout, memory_limit, memory_budget, trap, policy_error | evaluations that failed |
//! | `stsguard_policy_timeouts_total` | `policy` | evaluations stopped by their deadline (also counted in errors) |
//! | `stsguard_monitor_findings_total` | `policy`, `finding` = would_deny, would_mutate | what monitor-mode policies would have done |
//! | `stsguard_reloads_total` | `what` = policies, certificate; `result` = success, failure | hot reloads |
//! | `stsguard_policy_circuit_state` | `policy` | 0 closed, 1 half-open, 2 open: the policy is not run and its failurePolicy decides |
//! | `stsguard_policies_loaded` | | policies in the set being served |
//! | `stsguard_build_info` | `version`, `wasmtime`, `wit` | always 1: what is running |
//! | `stsguard_cluster_objects`, `stsguard_cluster_bytes` | `kind` | what each cache of a kind the policies read holds ([`crate::cluster`]) |
//! | `stsguard_cluster_synced` | `kind` | 1 once the kind's first list completed |
//! | `stsguard_cluster_watch_errors_total` | `kind` | failed discoveries, lists and watches (each retried) |
//! | `stsguard_cluster_last_event_timestamp_seconds`, `..._age_seconds` | `kind` | when the kind's last event arrived: how stale the cache may be |
//!
//! Every label has few values: no namespaces, object names or users (a metric per
//! object would grow without bound). Latency buckets reach 30 s, the longest
//! `timeoutSeconds` the API server allows, so a review near any configured
//! timeout lands in a bucket of its own.

mod process;

pub(crate) use process::{context_switches, cpu_seconds, resident_bytes};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::chain::{ChainOutcome, CircuitState, PolicySet, RunResult};
use crate::config::Mode;

/// What a review was, for `stsguard_reviews_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub outcome: &'static str,
    pub operation: &'static str,
    /// A kind some loaded policy names, or `other`: bounded by the configuration.
    pub kind: String,
    pub dry_run: &'static str,
}

impl ReviewLabels {
    /// A review that could not be read: nothing is known about it.
    pub fn unknown(outcome: &'static str) -> Self {
        Self {
            outcome,
            operation: "unknown",
            kind: "unknown".into(),
            dry_run: "false",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

/// Which module a policy runs: its source as pinned, and the module's sha256.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleLabels {
    pub policy: String,
    /// `builtin:NAME`, the file, or `oci://HOST/REPO:TAG@sha256:MANIFEST`.
    pub source: String,
    pub sha256: String,
    /// The fingerprint of the key whose signature verified (`sha256:...`);
    /// empty when no signature was asked for.
    pub signer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvaluationLabels {
    pub policy: String,
    pub mode: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub policy: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub policy: String,
    pub finding: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub what: &'static str,
    pub result: &'static str,
}

/// Every metric the server keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    review_duration: Histogram,
    evaluations: Family<EvaluationLabels, Counter>,
    evaluation_duration: Family<PolicyLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    timeouts: Family<PolicyLabels, Counter>,
    findings: Family<FindingLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    circuits: Family<PolicyLabels, Gauge>,
    modules: Family<ModuleLabels, Gauge>,
    pub policies_loaded: Gauge,
}

/// Latency buckets from 25 µs to 30 s: evaluations are ~100 µs when healthy, and
/// the API server waits at most 30 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
        0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Metrics {
    /// Every metric, and the cluster caches' when there are any.
    pub fn new(cluster: Option<&std::sync::Arc<crate::cluster::Cluster>>) -> Self {
        let mut registry = Registry::default();
        let ours = registry.sub_registry_with_prefix("stsguard");
        let reviews = Family::default();
        ours.register(
            "reviews",
            "Admission reviews answered, by outcome, operation, kind and dry run",
            reviews.clone(),
        );
        let review_duration = Histogram::new(latency_buckets());
        ours.register(
            "review_duration_seconds",
            "Time to answer one admission review",
            review_duration.clone(),
        );
        let evaluations = Family::default();
        ours.register(
            "policy_evaluations",
            "Policy evaluations by policy, mode and what they came to",
            evaluations.clone(),
        );
        let evaluation_duration = Family::<PolicyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        ours.register(
            "policy_evaluation_duration_seconds",
            "Time of one policy evaluation in a fresh instance",
            evaluation_duration.clone(),
        );
        let errors = Family::default();
        ours.register(
            "policy_errors",
            "Policy evaluations that failed, by reason",
            errors.clone(),
        );
        let timeouts = Family::default();
        ours.register(
            "policy_timeouts",
            "Policy evaluations stopped by their deadline",
            timeouts.clone(),
        );
        let findings = Family::default();
        ours.register(
            "monitor_findings",
            "What monitor-mode policies would have done",
            findings.clone(),
        );
        let reloads = Family::default();
        ours.register(
            "reloads",
            "Hot reloads of policies and certificate",
            reloads.clone(),
        );
        let circuits = Family::default();
        ours.register(
            "policy_circuit_state",
            "Each policy's circuit breaker: 0 closed, 1 half-open (testing), 2 open (not run)",
            circuits.clone(),
        );
        let modules = Family::default();
        ours.register(
            "policy_module",
            "1 for the module each served policy runs: its source (a registry reference pinned \
             to the manifest digest), the module's sha256, and the key that signed it (verification)",
            modules.clone(),
        );
        let policies_loaded = Gauge::default();
        ours.register(
            "policies_loaded",
            "Policies in the set being served",
            policies_loaded.clone(),
        );
        ours.register(
            "build",
            "The stsguard build that is running",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("wasmtime", env!("STSGUARD_WASMTIME_VERSION")),
                ("wit", stsguard_contract::WIT_PACKAGE),
            ]),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        registry.register_collector(crate::cluster::Cluster::collector(cluster));
        Self {
            registry,
            reviews,
            review_duration,
            evaluations,
            evaluation_duration,
            errors,
            timeouts,
            findings,
            reloads,
            circuits,
            modules,
            policies_loaded,
        }
    }

    /// Records one answered review and what each policy did in it.
    pub fn record_review(&self, review: &ReviewLabels, seconds: f64, chain: Option<&ChainOutcome>) {
        self.reviews.get_or_create(review).inc();
        self.review_duration.observe(seconds);
        for run in chain.iter().flat_map(|chain| &chain.runs) {
            let policy = run.policy.to_string();
            let result = match &run.result {
                RunResult::Allowed { mutated: false } => "allowed",
                RunResult::Allowed { mutated: true } => "mutated",
                RunResult::Denied => "denied",
                RunResult::Failed(_) => "failed",
                RunResult::Skipped(_) => "skipped",
            };
            let mode = match run.mode {
                Mode::Enforce => "enforce",
                Mode::Monitor => "monitor",
            };
            self.evaluations
                .get_or_create(&EvaluationLabels {
                    policy: policy.clone(),
                    mode,
                    result,
                })
                .inc();
            if !matches!(run.result, RunResult::Skipped(_)) {
                self.evaluation_duration
                    .get_or_create(&PolicyLabels {
                        policy: policy.clone(),
                    })
                    .observe(run.duration.as_secs_f64());
            }
            let finding = match (&run.result, run.mode) {
                (RunResult::Failed(error), _) => {
                    self.errors
                        .get_or_create(&ErrorLabels {
                            policy: policy.clone(),
                            reason: error.reason(),
                        })
                        .inc();
                    if error.reason() == "timeout" {
                        self.timeouts
                            .get_or_create(&PolicyLabels {
                                policy: policy.clone(),
                            })
                            .inc();
                    }
                    None
                }
                (RunResult::Denied, Mode::Monitor) => Some("would_deny"),
                (RunResult::Allowed { mutated: true }, Mode::Monitor) => Some("would_mutate"),
                _ => None,
            };
            if let Some(finding) = finding {
                self.findings
                    .get_or_create(&FindingLabels { policy, finding })
                    .inc();
            }
        }
    }

    /// The circuit state of every policy being served (0 closed, 1 half-open, 2
    /// open), read at each scrape; policies no longer served disappear.
    /// The served set's modules and circuit states, as of now (at each scrape).
    pub fn record_policies(&self, policies: &PolicySet) {
        self.modules.clear();
        for policy in policies.policies() {
            self.modules
                .get_or_create(&ModuleLabels {
                    policy: policy.name().to_string(),
                    source: policy.source(),
                    sha256: policy.digest(),
                    signer: policy
                        .signer()
                        .map(|signer| signer.key.clone())
                        .unwrap_or_default(),
                })
                .set(1);
        }
        self.record_circuits(policies);
    }

    fn record_circuits(&self, policies: &PolicySet) {
        self.circuits.clear();
        for policy in policies.policies() {
            let state = match policy.circuit_state() {
                CircuitState::Closed => 0,
                CircuitState::HalfOpen => 1,
                CircuitState::Open => 2,
            };
            self.circuits
                .get_or_create(&PolicyLabels {
                    policy: policy.name().to_string(),
                })
                .set(state);
        }
    }

    pub fn record_reload(&self, what: &'static str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ReloadLabels { what, result })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::chain::PolicyRun;
    use crate::config::FailurePolicy;
    use crate::engine::EvalError;

    fn run(policy: &str, mode: Mode, result: RunResult) -> PolicyRun {
        PolicyRun {
            policy: policy.into(),
            mode,
            failure_policy: FailurePolicy::Ignore,
            duration: Duration::from_millis(2),
            result,
            warnings: vec![],
            message: None,
            would_patch: None,
        }
    }

    #[test]
    fn reviews_and_evaluations_carry_bounded_labels() {
        let metrics = Metrics::default();
        let outcome = ChainOutcome {
            runs: vec![
                run(
                    "probes",
                    Mode::Enforce,
                    RunResult::Allowed { mutated: true },
                ),
                run("trial", Mode::Monitor, RunResult::Denied),
                run(
                    "slow",
                    Mode::Enforce,
                    RunResult::Failed(EvalError::Timeout(Duration::from_secs(1))),
                ),
            ],
            ..ChainOutcome::default()
        };
        let labels = ReviewLabels {
            outcome: "patched",
            operation: "UPDATE",
            kind: "StatefulSet".into(),
            dry_run: "true",
        };
        metrics.record_review(&labels, 0.003, Some(&outcome));
        metrics.record_review(&ReviewLabels::unknown("invalid"), 0.0001, None);
        let text = metrics.encode();
        for line in [
            r#"stsguard_reviews_total{outcome="patched",operation="UPDATE",kind="StatefulSet",dry_run="true"} 1"#,
            r#"stsguard_reviews_total{outcome="invalid",operation="unknown",kind="unknown",dry_run="false"} 1"#,
            r#"stsguard_policy_evaluations_total{policy="probes",mode="enforce",result="mutated"} 1"#,
            r#"stsguard_policy_evaluations_total{policy="trial",mode="monitor",result="denied"} 1"#,
            r#"stsguard_policy_evaluations_total{policy="slow",mode="enforce",result="failed"} 1"#,
            r#"stsguard_policy_errors_total{policy="slow",reason="timeout"} 1"#,
            r#"stsguard_monitor_findings_total{policy="trial",finding="would_deny"} 1"#,
            r#"stsguard_review_duration_seconds_bucket{le="30.0"} 2"#,
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert!(text.contains("stsguard_build_info{version=\""), "{text}");
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
    }
}
