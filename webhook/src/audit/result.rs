//! What one object's decision comes to, in the audit's four words.
//!
//! In order, the first that applies:
//!
//! - `error`: a policy failed (error, trap, time-out, memory) or was not run
//!   (circuit open, bulkhead full). Whatever its failurePolicy made of that —
//!   `ignore` allows the object unchanged — the policy did not judge the object,
//!   so the audit cannot call it compliant.
//! - `would-deny`: the chain denies it; or a policy in monitor mode would have
//!   (the webhook would only warn).
//! - `would-mutate`: the chain patches it, a monitor-mode policy would have, or
//!   a policy warns about it; with the JSON pointers that would change.
//! - `compliant`: allowed, no patch, no warnings.

use serde_json::Value;

use crate::admission::Decision;
use crate::chain::RunResult;
use crate::config::Mode;

/// The audit's verdict on one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Compliant,
    WouldMutate {
        /// The JSON pointers the patch (or a monitor policy's would-be patch)
        /// touches, in order, each once.
        paths: Vec<String>,
        warnings: Vec<String>,
    },
    WouldDeny {
        message: String,
    },
    Error {
        message: String,
    },
}

impl Finding {
    /// `compliant`, `would-mutate`, `would-deny` or `error`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Compliant => "compliant",
            Self::WouldMutate { .. } => "would-mutate",
            Self::WouldDeny { .. } => "would-deny",
            Self::Error { .. } => "error",
        }
    }

    /// One line about it: the paths (and how many warnings), the denial, the error.
    pub fn summary(&self) -> String {
        match self {
            Self::Compliant => String::new(),
            Self::WouldMutate { paths, warnings } => {
                let mut text = if paths.is_empty() {
                    "no patch".to_string()
                } else {
                    paths.join(", ")
                };
                match warnings.len() {
                    0 => {}
                    1 => text.push_str(" (1 warning)"),
                    n => text.push_str(&format!(" ({n} warnings)")),
                }
                text
            }
            Self::WouldDeny { message } | Self::Error { message } => message.clone(),
        }
    }
}

/// Classifies one decision (see the module docs for the order).
pub fn classify(decision: &Decision) -> Finding {
    let Decision { response, outcome } = decision;
    let failures: Vec<String> = outcome
        .runs
        .iter()
        .filter_map(|run| match &run.result {
            RunResult::Failed(error) => Some(format!("policy `{}` failed: {error}", run.policy)),
            RunResult::Skipped(refusal) => {
                Some(format!("policy `{}` was not run: {refusal}", run.policy))
            }
            RunResult::Allowed { .. } | RunResult::Denied => None,
        })
        .collect();
    if !failures.is_empty() {
        return Finding::Error {
            message: failures.join("; "),
        };
    }
    if !response.allowed {
        let message = response
            .status
            .as_ref()
            .map(|status| status.message.clone())
            .unwrap_or_else(|| "denied".to_string());
        return Finding::WouldDeny { message };
    }
    let monitor_denials: Vec<String> = outcome
        .runs
        .iter()
        .filter(|run| run.mode == Mode::Monitor && run.result == RunResult::Denied)
        .map(|run| {
            format!(
                "policy `{}` would deny (monitor mode, not enforced): {}",
                run.policy,
                run.message.as_deref().unwrap_or("no message")
            )
        })
        .collect();
    if !monitor_denials.is_empty() {
        return Finding::WouldDeny {
            message: monitor_denials.join("; "),
        };
    }
    let mut paths = Vec::new();
    if let Some(patch) = &outcome.patch {
        let patch = serde_json::to_value(patch).expect("a JSON patch serializes");
        add_paths(&mut paths, &patch);
    }
    for would_patch in outcome
        .runs
        .iter()
        .filter_map(|run| run.would_patch.as_deref())
    {
        if let Ok(patch) = serde_json::from_str::<Value>(would_patch) {
            add_paths(&mut paths, &patch);
        }
    }
    if paths.is_empty() && response.warnings.is_empty() {
        return Finding::Compliant;
    }
    Finding::WouldMutate {
        paths,
        warnings: response.warnings.clone(),
    }
}

/// Adds the `path` of each operation of `patch` not already in `paths`.
pub(super) fn add_paths(paths: &mut Vec<String>, patch: &Value) {
    for path in patch
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|operation| operation["path"].as_str())
    {
        if !paths.iter().any(|known| known == path) {
            paths.push(path.to_string());
        }
    }
}
