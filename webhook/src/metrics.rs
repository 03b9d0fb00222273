//! Prometheus metrics, all named `stsguard_*` with units in the name.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `stsguard_reviews_total` | `outcome` = allowed, patched, denied, invalid, error (stsguard failed) | reviews answered |
//! | `stsguard_review_duration_seconds` | | whole review, parse to answer |
//! | `stsguard_policy_evaluation_duration_seconds` | `policy` | one policy evaluation, fresh instance included |
//! | `stsguard_policy_errors_total` | `policy`, `reason` = timeout, memory_limit, memory_budget, trap, policy_error | evaluations that failed |
//! | `stsguard_policy_timeouts_total` | `policy` | evaluations stopped by their deadline (also counted in errors) |
//! | `stsguard_monitor_findings_total` | `policy`, `finding` = would_deny, would_mutate | what monitor-mode policies would have done |
//! | `stsguard_reloads_total` | `what` = policies, certificate; `result` = success, failure | hot reloads |
//! | `stsguard_policies_loaded` | | policies in the set being served |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::chain::{ChainOutcome, RunResult};
use crate::config::Mode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
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
    reviews: Family<OutcomeLabels, Counter>,
    review_duration: Histogram,
    evaluation_duration: Family<PolicyLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    timeouts: Family<PolicyLabels, Counter>,
    findings: Family<FindingLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    pub policies_loaded: Gauge,
}

/// Latency buckets from 25 µs to 2.5 s: evaluations are ~100 µs when healthy.
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
        0.25, 0.5, 1.0, 2.5,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("stsguard");
        let reviews = Family::default();
        registry.register(
            "reviews",
            "Admission reviews answered, by outcome",
            reviews.clone(),
        );
        let review_duration = Histogram::new(latency_buckets());
        registry.register(
            "review_duration_seconds",
            "Time to answer one admission review",
            review_duration.clone(),
        );
        let evaluation_duration = Family::<PolicyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "policy_evaluation_duration_seconds",
            "Time of one policy evaluation in a fresh instance",
            evaluation_duration.clone(),
        );
        let errors = Family::default();
        registry.register(
            "policy_errors",
            "Policy evaluations that failed, by reason",
            errors.clone(),
        );
        let timeouts = Family::default();
        registry.register(
            "policy_timeouts",
            "Policy evaluations stopped by their deadline",
            timeouts.clone(),
        );
        let findings = Family::default();
        registry.register(
            "monitor_findings",
            "What monitor-mode policies would have done",
            findings.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "reloads",
            "Hot reloads of policies and certificate",
            reloads.clone(),
        );
        let policies_loaded = Gauge::default();
        registry.register(
            "policies_loaded",
            "Policies in the set being served",
            policies_loaded.clone(),
        );
        Self {
            registry,
            reviews,
            review_duration,
            evaluation_duration,
            errors,
            timeouts,
            findings,
            reloads,
            policies_loaded,
        }
    }
}

impl Metrics {
    /// Records one answered review and what each policy did in it.
    pub fn record_review(&self, outcome: &'static str, seconds: f64, chain: Option<&ChainOutcome>) {
        self.reviews.get_or_create(&OutcomeLabels { outcome }).inc();
        self.review_duration.observe(seconds);
        for run in chain.iter().flat_map(|chain| &chain.runs) {
            let policy = run.policy.to_string();
            self.evaluation_duration
                .get_or_create(&PolicyLabels {
                    policy: policy.clone(),
                })
                .observe(run.duration.as_secs_f64());
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
