//! Cluster reads from a policy (contract 0.3, WIT `cluster`): the host side of
//! `get` and `list`. What answers them is a [`ClusterReader`] — the server's
//! watch-backed caches, or the objects given offline — and the rules (declared
//! kinds, selectors, the size bound) are the contract's, so every reader answers
//! alike.

use std::fmt;
use std::sync::Arc;

use stsguard_contract::cluster::{self, ReadError, ResourceKind, Selector};

use super::bindings::v0_3::stsguard::policy::cluster as wit;
use super::bindings::v0_3::stsguard::policy::types::ResourceKind as WitKind;
use super::sandbox::Sandbox;

/// Answers cluster reads. Implementations never block on the network: a read
/// happens during an admission review.
pub trait ClusterReader: Send + Sync {
    /// One object as JSON, `None` when there is none.
    fn get(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<str>>, ReadError>;

    /// The selected objects as a JSON array of at most `max_bytes`.
    fn list(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        selector: &Selector,
        max_bytes: usize,
    ) -> Result<String, ReadError>;
}

/// What one policy may read: a reader, and the kinds its metadata declares.
#[derive(Clone)]
pub struct ClusterAccess {
    pub reader: Arc<dyn ClusterReader>,
    pub declared: Arc<[ResourceKind]>,
}

impl fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterAccess")
            .field("declared", &self.declared)
            .finish_non_exhaustive()
    }
}

impl ClusterAccess {
    fn checked(&self, kind: &ResourceKind) -> Result<&dyn ClusterReader, ReadError> {
        cluster::check_declared(&self.declared, kind)?;
        Ok(&*self.reader)
    }
}

fn kind_of(kind: WitKind) -> ResourceKind {
    ResourceKind {
        api_version: kind.api_version,
        kind: kind.kind,
    }
}

fn to_wit(error: ReadError) -> wit::ReadError {
    match error {
        ReadError::NotGranted(m) => wit::ReadError::NotGranted(m),
        ReadError::NotSynced(m) => wit::ReadError::NotSynced(m),
        ReadError::TooLarge(m) => wit::ReadError::TooLarge(m),
        ReadError::Invalid(m) => wit::ReadError::Invalid(m),
    }
}

/// The reason a policy without access gets: no reader was given to the call.
fn no_cluster(kind: &ResourceKind) -> ReadError {
    ReadError::NotSynced(format!(
        "{kind} cannot be read: this stsguard has no cluster to read from (no kubeconfig or \
         service account; offline, give the objects with --context or `context:`)"
    ))
}

impl Sandbox {
    fn access(&self, kind: &ResourceKind) -> Result<&dyn ClusterReader, ReadError> {
        match &self.context().cluster {
            Some(access) => {
                let reader = access.checked(kind)?;
                Ok(reader)
            }
            None => Err(no_cluster(kind)),
        }
    }

    fn record(&self, kind: &ResourceKind, result: &Result<impl Sized, ReadError>) {
        if let Err(error) = result {
            tracing::debug!(
                policy = &*self.context().policy,
                uid = &*self.context().uid,
                kind = %kind,
                reason = error.reason(),
                "cluster read refused: {error}"
            );
        }
    }
}

impl wit::Host for Sandbox {
    fn get_object(
        &mut self,
        kind: WitKind,
        namespace: Option<String>,
        name: String,
    ) -> Result<Option<String>, wit::ReadError> {
        let kind = kind_of(kind);
        let result = self
            .access(&kind)
            .and_then(|reader| reader.get(&kind, namespace.as_deref(), &name));
        self.record(&kind, &result);
        result
            .map(|found| found.map(|json| json.to_string()))
            .map_err(to_wit)
    }

    fn list_objects(
        &mut self,
        kind: WitKind,
        namespace: Option<String>,
        label_selector: String,
    ) -> Result<String, wit::ReadError> {
        let kind = kind_of(kind);
        let max_bytes = cluster::max_list_bytes(self.memory_limit());
        let result = Selector::parse(&label_selector)
            .map_err(ReadError::Invalid)
            .and_then(|selector| {
                self.access(&kind).and_then(|reader| {
                    reader.list(&kind, namespace.as_deref(), &selector, max_bytes)
                })
            });
        self.record(&kind, &result);
        result.map_err(to_wit)
    }
}
