//! The admission decision for one review: run the chain, and turn what it came
//! to into the [`Response`] — allowed, patched or denied, with the warnings and
//! the audit annotations each policy's run earned.
//!
//! A pure function of the request and the policy set ([`decide`]), unit-tested
//! without a socket; the wire format is `review`, the transport `server`.

use std::collections::BTreeMap;
use std::time::Instant;

use stsguard_contract::text;

use crate::chain::{ChainOutcome, PolicySet, Selection};
use crate::review::{Response, ReviewRequest};

/// What was decided about one review, and how the chain got there (for logs
/// and metrics).
#[derive(Debug)]
pub struct Decision {
    pub response: Response,
    pub outcome: ChainOutcome,
}

impl Decision {
    /// `denied`, `patched` or `allowed`: the outcome label of metrics and logs.
    pub fn label(&self) -> &'static str {
        match (self.response.allowed, &self.response.patch) {
            (false, _) => "denied",
            (true, Some(_)) => "patched",
            (true, None) => "allowed",
        }
    }
}

/// Decides one review: runs the selected policies and turns the chain's outcome
/// into a response. Never fails: policy errors are already resolved by each
/// policy's failurePolicy inside the chain. `request.object` is left as the API
/// server will store it (see `PolicySet::evaluate`).
pub fn decide(
    request: &mut ReviewRequest,
    policies: &PolicySet,
    selection: Selection<'_>,
    deadline: Instant,
) -> Decision {
    let outcome = policies.evaluate(request, selection, deadline);
    let response = match &outcome.denial {
        Some(denial) => Response::deny(
            &request.uid,
            text::denied(&denial.policy, &request.object_name(), &denial.message),
        ),
        None => Response::allow(&request.uid).with_patch(
            outcome
                .patch
                .as_ref()
                .map(|patch| serde_json::to_vec(patch).expect("a JSON patch serializes")),
        ),
    }
    .with_warnings(outcome.warnings.clone())
    .with_audit_annotations(audit_annotations(&outcome));
    Decision { response, outcome }
}

/// What each policy did, for the cluster's audit log, keyed by policy: only what
/// matters afterwards (see `PolicyRun::audit_annotation`).
fn audit_annotations(outcome: &ChainOutcome) -> BTreeMap<String, String> {
    outcome
        .runs
        .iter()
        .filter_map(|run| Some((run.policy.to_string(), run.audit_annotation()?)))
        .collect()
}
