//! Listing StatefulSets a page at a time: the continue token followed, transient
//! API errors retried with capped exponential backoff, and the errors a user can
//! act on (401, 403, an expired continue token) explained.
//!
//! Items are read as raw JSON (`serde_json::Value`), not as k8s-openapi's typed
//! `StatefulSet`: a typed round trip would drop fields this version of the types
//! does not know, and the policies must see the object the API server has.

use std::time::Duration;

use kube::Client;
use kube::api::ListParams;
use serde_json::Value;

use crate::errors::describe_error;

/// Objects per page: the API server's recommended chunk size (kubectl's too).
pub const PAGE_SIZE: u32 = 500;

/// Where to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Namespace(String),
    All,
}

impl Scope {
    fn path(&self) -> String {
        match self {
            Self::Namespace(namespace) => {
                format!("/apis/apps/v1/namespaces/{namespace}/statefulsets")
            }
            Self::All => "/apis/apps/v1/statefulsets".to_string(),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Namespace(namespace) => write!(f, "in namespace \"{namespace}\""),
            Self::All => f.write_str("in all namespaces"),
        }
    }
}

/// How transient errors (5xx, 429, time-outs, refused or reset connections) are
/// retried: `attempts` tries in all, waiting `initial`, then twice as long each
/// time, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Retry {
    /// 5 attempts over ~3.75 s (0.25, 0.5, 1, 2 s between them): rides out an
    /// API server restart behind a load balancer, gives up on one that is gone.
    fn default() -> Self {
        Self {
            attempts: 5,
            initial: Duration::from_millis(250),
            max: Duration::from_secs(4),
        }
    }
}

impl Retry {
    /// The wait before try `attempt + 1` (after `attempt` failed, from 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Why a page could not be listed; the message says what to do. The API
/// server's own message is part of it, never also a `source()` (docs/design.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(
        "the audit may not list statefulsets.apps {scope} (403 Forbidden): grant its user `list` on statefulsets.apps {grant} (the API server said: {message})"
    )]
    Forbidden {
        scope: Scope,
        grant: &'static str,
        message: String,
    },
    #[error(
        "the API server refused the audit's credentials (401 Unauthorized): check the kubeconfig's user (an expired token or certificate?) or the service account token (the API server said: {message})"
    )]
    Unauthorized { message: String },
    #[error(
        "the list's continue token expired before the audit read the next page (410 Gone): run the audit again, or audit less at once (--namespace, --selector) (the API server said: {message})"
    )]
    Expired { message: String },
    #[error(
        "could not list statefulsets.apps {scope}: gave up after {attempts} attempts over {elapsed:.1?}: {cause}"
    )]
    GaveUp {
        scope: Scope,
        attempts: u32,
        elapsed: Duration,
        cause: String,
    },
    #[error("could not list statefulsets.apps {scope}: {cause}")]
    Failed { scope: Scope, cause: String },
}

/// Lists the StatefulSets of a scope one page at a time.
pub struct Lister {
    client: Client,
    scope: Scope,
    selector: Option<String>,
    retry: Retry,
    page_size: u32,
    /// `None` before the first page; `Some("")` after the last.
    continue_token: Option<String>,
}

/// The label that keeps stsguard away from an object (the webhook's
/// objectSelector): what the webhook never sees, the audit does not judge.
pub const OPT_OUT_SELECTOR: &str = "stsguard.io/ignore!=true";

/// `selector` (if any) and never the objects that opted out.
pub fn with_opt_out(selector: Option<String>) -> String {
    match selector {
        Some(selector) if !selector.trim().is_empty() => format!("{selector},{OPT_OUT_SELECTOR}"),
        _ => OPT_OUT_SELECTOR.to_string(),
    }
}

impl Lister {
    /// Lists what `selector` matches in `scope`, never objects labelled
    /// `stsguard.io/ignore: "true"`.
    pub fn new(client: Client, scope: Scope, selector: Option<String>) -> Self {
        Self {
            client,
            scope,
            selector: Some(with_opt_out(selector)),
            retry: Retry::default(),
            page_size: PAGE_SIZE,
            continue_token: None,
        }
    }

    pub fn with_retry(self, retry: Retry) -> Self {
        Self { retry, ..self }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The next page's items; `None` after the last page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Value>>, ListError> {
        let token = match self.continue_token.as_deref() {
            Some("") => return Ok(None),
            token => token.map(str::to_string),
        };
        let params = ListParams {
            label_selector: self.selector.clone(),
            limit: Some(self.page_size),
            continue_token: token,
            ..ListParams::default()
        };
        let mut list = self.list(&params).await?;
        let items = match list.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(ListError::Failed {
                    scope: self.scope.clone(),
                    cause: "the API server's answer is not a list (its `items` is not an array)"
                        .into(),
                });
            }
        };
        let next = list
            .pointer("/metadata/continue")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.continue_token = Some(next.to_string());
        Ok(Some(items))
    }

    /// One list call, retried while its errors are transient.
    async fn list(&self, params: &ListParams) -> Result<Value, ListError> {
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = kube::core::Request::new(self.scope.path())
                .list(params)
                .map_err(|error| ListError::Failed {
                    scope: self.scope.clone(),
                    cause: format!("could not build the request: {error}"),
                })?;
            let error = match self.client.request::<Value>(request).await {
                Ok(list) => return Ok(list),
                Err(error) => error,
            };
            if !is_transient(&error) {
                return Err(self.explain(error));
            }
            let cause = describe_kube_error(&error);
            if attempt >= self.retry.attempts {
                return Err(ListError::GaveUp {
                    scope: self.scope.clone(),
                    attempts: attempt,
                    elapsed: started.elapsed(),
                    cause,
                });
            }
            let delay = self.retry.delay(attempt);
            tracing::warn!(
                scope = %self.scope,
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                error = %cause,
                "audit: listing failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// A permanent error, with what to do about it.
    fn explain(&self, error: kube::Error) -> ListError {
        let scope = self.scope.clone();
        match error {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match status.code {
                    401 => ListError::Unauthorized { message },
                    403 => ListError::Forbidden {
                        grant: match scope {
                            Scope::Namespace(_) => {
                                "in that namespace (a Role and RoleBinding), or cluster-wide"
                            }
                            Scope::All => {
                                "cluster-wide (a ClusterRole and ClusterRoleBinding), or audit one namespace with --namespace"
                            }
                        },
                        scope,
                        message,
                    },
                    410 => ListError::Expired { message },
                    _ => ListError::Failed {
                        scope,
                        cause: describe_status(&status),
                    },
                }
            }
            other => ListError::Failed {
                scope,
                cause: describe_kube_error(&other),
            },
        }
    }
}

/// Whether trying again may help: the API server's 5xx and 429, and any failure
/// to get an answer at all (refused, reset, timed out).
pub(super) fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

pub(super) fn describe_status(status: &kube::core::Status) -> String {
    let reason = if status.reason.is_empty() {
        String::new()
    } else {
        format!(" {}", status.reason)
    };
    format!("{}{reason}: {}", status.code, status.message)
}

pub(super) fn describe_kube_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => describe_status(status),
        other => describe_error(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let retry = Retry::default();
        let delays: Vec<_> = (1..=6).map(|attempt| retry.delay(attempt)).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 4000].map(Duration::from_millis)
        );
    }

    #[test]
    fn scopes_name_where_they_list() {
        let team = Scope::Namespace("team-a".into());
        assert_eq!(team.path(), "/apis/apps/v1/namespaces/team-a/statefulsets");
        assert_eq!(team.to_string(), "in namespace \"team-a\"");
        assert_eq!(Scope::All.path(), "/apis/apps/v1/statefulsets");
        assert_eq!(Scope::All.to_string(), "in all namespaces");
    }

    #[test]
    fn only_errors_that_may_pass_are_transient() {
        let status = |code| {
            kube::Error::Api(
                kube::core::Status::failure("x", "y")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert!(is_transient(&status(500)));
        assert!(is_transient(&status(503)));
        assert!(is_transient(&status(429)));
        assert!(!is_transient(&status(403)));
        assert!(!is_transient(&status(401)));
        assert!(!is_transient(&status(410)));
        assert!(!is_transient(&status(400)));
    }
}
