//! What one policy's evaluation came to, and every way it is reported: the
//! warnings the user reads, the denial, the audit annotation. Metrics read the
//! same [`PolicyRun`]s. One place, so that a run reported as "skipped" in the
//! audit log is skipped in the warnings too.

use std::sync::Arc;
use std::time::Duration;

use stsguard_contract::text;

use super::guard::Refusal;
use crate::config::{FailurePolicy, Mode};
use crate::engine::EvalError;

/// One policy's part in one review.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRun {
    pub policy: Arc<str>,
    pub mode: Mode,
    pub failure_policy: FailurePolicy,
    pub duration: Duration,
    pub result: RunResult,
    /// The policy's own warnings, as it returned them.
    pub warnings: Vec<String>,
    /// The policy's denial message (bounded), when it denied.
    pub message: Option<String>,
    /// Monitor mode: the JSON Patch the policy would have caused.
    pub would_patch: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunResult {
    /// Allowed; `mutated`: the object changed (enforce) or would have (monitor).
    Allowed {
        mutated: bool,
    },
    Denied,
    Failed(EvalError),
    /// Not run: its circuit is open or its bulkhead full. Like a failure, its
    /// failurePolicy decides.
    Skipped(Refusal),
}

impl RunResult {
    /// The short label of a failure or refusal.
    fn failure_reason(&self) -> Option<&'static str> {
        match self {
            Self::Failed(error) => Some(error.reason()),
            Self::Skipped(refusal) => Some(refusal.reason()),
            Self::Allowed { .. } | Self::Denied => None,
        }
    }
}

impl PolicyRun {
    fn monitor(&self) -> bool {
        self.mode == Mode::Monitor
    }

    /// Whether this run decides the review against the request: an enforced
    /// denial, or a failure whose failurePolicy is `fail`. The chain stops here.
    pub fn denies(&self) -> bool {
        !self.monitor()
            && match self.result {
                RunResult::Allowed { .. } => false,
                RunResult::Denied => true,
                RunResult::Failed(_) | RunResult::Skipped(_) => {
                    self.failure_policy == FailurePolicy::Fail
                }
            }
    }

    /// The message of the denial, when [`PolicyRun::denies`]; `uid` is the
    /// review's, under which the log has a failure's details.
    pub fn denial_message(&self, uid: &str) -> Option<String> {
        if !self.denies() {
            return None;
        }
        Some(match self.result.failure_reason() {
            Some(reason) => text::failed_denial(reason, uid),
            None => self.message.clone().unwrap_or_else(|| "denied".into()),
        })
    }

    /// What the user is told about this run, besides a denial: the policy's own
    /// warnings, and what monitor mode saw or why the policy was skipped.
    pub fn user_warnings(&self) -> impl Iterator<Item = String> + '_ {
        let extra = match &self.result {
            RunResult::Denied if self.monitor() => Some(text::would_deny(
                self.message.as_deref().unwrap_or("denied"),
            )),
            RunResult::Allowed { .. } => self.would_patch.as_deref().map(text::would_patch),
            RunResult::Failed(_) | RunResult::Skipped(_) if !self.denies() => {
                self.result.failure_reason().map(text::failed_skipped)
            }
            _ => None,
        };
        self.warnings.iter().cloned().chain(extra)
    }

    /// The prefix of this run's warnings: `stsguard/<policy>: `.
    pub fn warning_prefix(&self) -> String {
        text::warning_prefix(&self.policy, self.monitor())
    }

    /// What the cluster's audit log records for this run; `None` for a run that
    /// allowed the object unchanged (nothing worth recording). Warnings reach
    /// only the client that made the request; these stay with the request's
    /// audit event, so an operator can later find what monitor mode saw and
    /// which policies failed and were skipped.
    pub fn audit_annotation(&self) -> Option<String> {
        let monitor = self.monitor();
        Some(match &self.result {
            RunResult::Allowed { mutated: false } => return None,
            RunResult::Allowed { mutated: true } if monitor => "monitor: would mutate".into(),
            RunResult::Allowed { mutated: true } => "mutated".into(),
            RunResult::Denied if monitor => "monitor: would deny".into(),
            RunResult::Denied => "denied".into(),
            RunResult::Failed(_) | RunResult::Skipped(_) => {
                let effect = if self.denies() {
                    "denied (failurePolicy fail)"
                } else {
                    "skipped"
                };
                let what = if matches!(self.result, RunResult::Skipped(_)) {
                    "not run"
                } else {
                    "failed"
                };
                let reason = self.result.failure_reason().unwrap_or_default();
                format!("{what} ({reason}): {effect}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn run(policy: &str, mode: Mode, result: RunResult) -> PolicyRun {
        PolicyRun {
            policy: policy.into(),
            mode,
            failure_policy: FailurePolicy::Fail,
            duration: Duration::ZERO,
            result,
            warnings: vec![],
            message: None,
            would_patch: None,
        }
    }

    #[test]
    fn audit_annotations_record_what_each_policy_did_that_matters() {
        let annotation = |run: PolicyRun| run.audit_annotation();
        let ignored = PolicyRun {
            failure_policy: FailurePolicy::Ignore,
            ..run(
                "slow",
                Mode::Enforce,
                RunResult::Failed(EvalError::Timeout(Duration::from_secs(1))),
            )
        };
        assert_eq!(
            annotation(run(
                "quiet",
                Mode::Enforce,
                RunResult::Allowed { mutated: false }
            )),
            None
        );
        assert_eq!(
            annotation(run(
                "p",
                Mode::Enforce,
                RunResult::Allowed { mutated: true }
            ))
            .unwrap(),
            "mutated"
        );
        assert_eq!(
            annotation(run(
                "p",
                Mode::Monitor,
                RunResult::Allowed { mutated: true }
            ))
            .unwrap(),
            "monitor: would mutate"
        );
        assert_eq!(
            annotation(run("p", Mode::Monitor, RunResult::Denied)).unwrap(),
            "monitor: would deny"
        );
        assert_eq!(
            annotation(run("p", Mode::Enforce, RunResult::Denied)).unwrap(),
            "denied"
        );
        assert_eq!(annotation(ignored).unwrap(), "failed (timeout): skipped");
        assert_eq!(
            annotation(run(
                "p",
                Mode::Enforce,
                RunResult::Failed(EvalError::Trap("x".into()))
            ))
            .unwrap(),
            "failed (trap): denied (failurePolicy fail)"
        );
        assert_eq!(
            annotation(run(
                "p",
                Mode::Monitor,
                RunResult::Failed(EvalError::Trap("x".into()))
            ))
            .unwrap(),
            "failed (trap): skipped",
            "monitor mode never denies, whatever its failurePolicy"
        );
    }

    #[test]
    fn a_run_is_reported_the_same_way_everywhere() {
        let failed = run(
            "p",
            Mode::Enforce,
            RunResult::Failed(EvalError::Trap("x".into())),
        );
        assert!(failed.denies());
        assert!(
            failed
                .denial_message("u1")
                .unwrap()
                .ends_with("under uid u1")
        );
        assert_eq!(failed.user_warnings().count(), 0, "the denial says it");
        let skipped = PolicyRun {
            failure_policy: FailurePolicy::Ignore,
            ..failed.clone()
        };
        assert!(!skipped.denies() && skipped.denial_message("u1").is_none());
        assert_eq!(
            skipped.user_warnings().collect::<Vec<_>>(),
            ["the policy could not evaluate this object (trap) and was skipped"]
        );
        let watched = PolicyRun {
            message: Some("too big".into()),
            warnings: vec!["own".into()],
            ..run("w", Mode::Monitor, RunResult::Denied)
        };
        assert!(!watched.denies());
        assert_eq!(
            watched.user_warnings().collect::<Vec<_>>(),
            ["own", "would deny: too big"]
        );
        assert_eq!(watched.warning_prefix(), "stsguard/w (monitor): ");
    }
}
