//! The audit: the policy chain run on the StatefulSets that already exist in a
//! cluster — "what would the policies do if this object were created today" —
//! with one finding per object. The webhook only sees new writes; this sees the
//! rest. `stsguard audit` is its command line.
//!
//! ```text
//!  API server ──list, 500 a page──► list::Lister   (continue token, retries, 401/403 explained)
//!                                        │ one page of items
//!                                        ▼
//!                                  as_created(item)    the object as a CREATE would carry it
//!                                        │
//!                                        ▼
//!                           admission::decide(dry-run CREATE as `stsguard-audit`)
//!                                        │
//!                                        ▼
//!                                  result::classify ──► compliant | would-mutate | would-deny | error
//!                                        │ with --write-reports, once the run is complete
//!                                        ▼
//!                                  policy_report   one PolicyReport per namespace, server-side applied
//! ```
//!
//! **What a CREATE of a stored object carries.** The object the API server
//! stores has been through defaulting, as the object a webhook sees on a real
//! CREATE has (defaulting runs before mutating admission), so its `spec` is what
//! the policies would see and is kept whole. What is not part of a CREATE is
//! removed ([`as_created`]): `status` (written by the controller, reset on
//! create), and the fields the API server sets only *after* admission or on
//! storage — `metadata.uid`, `resourceVersion`, `generation`,
//! `creationTimestamp`, `deletionTimestamp`, `deletionGracePeriodSeconds`,
//! `selfLink` — and `managedFields` (bookkeeping of who wrote which field,
//! often larger than the object). Labels, annotations, owner references and
//! finalizers stay: a policy may read them (the built-ins read annotations).
//! Items of a list response carry no `apiVersion` and `kind`; they are set to
//! `apps/v1` `StatefulSet`.
//!
//! **Never a partial picture as a whole.** The list is read page by page (500
//! objects, following the continue token), and each page is evaluated before
//! the next is fetched, so memory stays bounded by a page whatever the
//! cluster's size. Transient API errors are retried ([`Retry`]); when a page
//! cannot be read in the end the run says how far it got ([`Completion`]) and
//! is not complete. One object that cannot be evaluated is an `error` finding
//! for that object and the audit goes on.
//!
//! **Continuous.** `watch` keeps the reports current from a watch on
//! StatefulSets, with metrics (see its docs); the one-shot run above is what a
//! CI job or a CronJob runs.

mod list;
pub mod policy_report;
mod result;
mod watch;

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stsguard_contract::request::{self, Requester};

use crate::admission::{self, Decision};
use crate::chain::{PolicySet, Selection};
use crate::review::{self, ReviewRequest};

pub use list::{ListError, Lister, Retry, Scope};
pub use policy_report::{PolicyReport, ReportError, Reports, Writer};
pub use result::{Finding, classify};
pub use watch::{AuditMetrics, WatchOptions, WatchState, watch};

/// The user the audit's AdmissionRequests name: a policy that treats some users
/// specially sees who asks.
pub const USERNAME: &str = "stsguard-audit";

/// The metadata fields the API server sets after admission or on storage, which
/// a CREATE therefore does not carry (see the module docs).
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

/// One StatefulSet as listed, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The object as a CREATE would carry it ([`as_created`]).
    pub object: Value,
}

impl Target {
    /// A list item: its identity, and the object as a CREATE would carry it.
    pub fn from_item(item: Value) -> Self {
        let text = |pointer: &str| {
            item.pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Self {
            namespace: text("/metadata/namespace"),
            name: text("/metadata/name"),
            uid: text("/metadata/uid"),
            object: as_created(item),
        }
    }
}

/// `object` (a stored StatefulSet) as a CREATE of it would carry it: `status`
/// and the fields the server sets after admission removed, `apiVersion` and
/// `kind` set. See the module docs for why each.
pub fn as_created(mut object: Value) -> Value {
    if let Value::Object(fields) = &mut object {
        fields.remove("status");
        fields.insert("apiVersion".into(), json!("apps/v1"));
        fields.insert("kind".into(), json!("StatefulSet"));
        if let Some(Value::Object(metadata)) = fields.get_mut("metadata") {
            for key in SERVER_METADATA {
                metadata.remove(*key);
            }
        }
    }
    object
}

/// What the chain made of one object.
#[derive(Debug)]
pub struct Evaluation {
    pub target: Target,
    /// The AdmissionRequest evaluated (its object as the decision leaves it)
    /// and the decision; `None` when the object could not become a request (the
    /// finding says why).
    pub decided: Option<(ReviewRequest, Decision)>,
    pub finding: Finding,
}

/// The chain and how long one object may take.
#[derive(Debug, Clone, Copy)]
pub struct Auditor<'a> {
    pub policies: &'a PolicySet,
    /// Each object's deadline, as a review's (`requestTimeout`).
    pub timeout: Duration,
}

impl Auditor<'_> {
    /// Evaluates one object as a dry-run CREATE by [`USERNAME`]. Never fails: an
    /// object that cannot be evaluated is an [`Finding::Error`].
    pub fn evaluate(&self, target: Target, index: usize) -> Evaluation {
        if !target.object.is_object() || target.name.is_empty() {
            return Evaluation {
                target,
                decided: None,
                finding: Finding::Error {
                    message: "the API server listed an item that is not an object with a \
                              metadata.name"
                        .into(),
                },
            };
        }
        let uid = format!("stsguard-audit-{index}");
        let who = Requester {
            uid: &uid,
            username: USERNAME,
            groups: &[],
            dry_run: true,
            field_manager: None,
        };
        let request = request::admission_request(target.object.clone(), None, None, &who);
        let parsed = review::parse_request(request).map_err(|error| error.message);
        let mut request = match parsed {
            Ok(request) => request,
            Err(message) => {
                return Evaluation {
                    target,
                    decided: None,
                    finding: Finding::Error {
                        message: format!("it is not an object the chain can evaluate: {message}"),
                    },
                };
            }
        };
        let deadline = Instant::now() + self.timeout.max(Duration::from_secs(1));
        let decision = admission::decide(&mut request, self.policies, Selection::All, deadline);
        let finding = classify(&decision);
        Evaluation {
            target,
            decided: Some((request, decision)),
            finding,
        }
    }
}

/// How far a run got.
#[derive(Debug)]
pub struct Completion {
    /// Pages read and objects evaluated.
    pub pages: usize,
    pub objects: usize,
    /// Why the list could not be read to its end.
    pub interrupted: Option<ListError>,
    /// The caller's `report` stopped the run.
    pub stopped: bool,
}

impl Completion {
    /// Whether every listed object was evaluated and reported.
    pub fn is_complete(&self) -> bool {
        self.interrupted.is_none() && !self.stopped
    }
}

/// Evaluates every StatefulSet `lister` lists, page by page, handing each
/// evaluation to `report` (which may stop the run with `Break`, e.g. when its
/// output is gone). One log line (`info`) per object that is not compliant.
pub async fn run(
    lister: &mut Lister,
    auditor: Auditor<'_>,
    mut report: impl FnMut(Evaluation) -> ControlFlow<()>,
) -> Completion {
    let mut completion = Completion {
        pages: 0,
        objects: 0,
        interrupted: None,
        stopped: false,
    };
    loop {
        let page = match lister.next_page().await {
            Ok(Some(page)) => page,
            Ok(None) => return completion,
            Err(error) => {
                completion.interrupted = Some(error);
                return completion;
            }
        };
        completion.pages += 1;
        for item in page {
            completion.objects += 1;
            let evaluation = auditor.evaluate(Target::from_item(item), completion.objects);
            log_finding(&evaluation);
            if report(evaluation).is_break() {
                completion.stopped = true;
                return completion;
            }
        }
    }
}

/// One log line (`info`) for an object that is not compliant.
fn log_finding(evaluation: &Evaluation) {
    if matches!(evaluation.finding, Finding::Compliant) {
        return;
    }
    let Target {
        namespace, name, ..
    } = &evaluation.target;
    tracing::info!(
        namespace = %namespace,
        name = %name,
        result = evaluation.finding.label(),
        detail = %evaluation.finding.summary(),
        "audit: not compliant"
    );
}

#[cfg(test)]
pub(crate) mod tests;
