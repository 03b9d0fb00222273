//! Cluster objects given offline (`stsguard eval --context`, `stsguard test`
//! with `context:`): answered by the same rules as the server's caches, with
//! every kind known — a kind without objects given lists empty, as an empty
//! cluster would.

use std::sync::Arc;

use stsguard_contract::cluster::{ReadError, ResourceKind, Selector, Snapshot};

use crate::engine::ClusterReader;

/// A fixed set of objects.
#[derive(Debug, Clone, Default)]
pub struct Offline(Snapshot);

impl Offline {
    /// No objects: an empty cluster.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The objects given, by their `apiVersion` and `kind`; an error names the
    /// object that cannot be placed.
    pub fn from_objects(
        objects: impl IntoIterator<Item = serde_json::Value>,
    ) -> Result<Self, String> {
        let mut snapshot = Snapshot::new();
        for object in objects {
            snapshot.insert(object)?;
        }
        Ok(Self(snapshot))
    }

    /// Objects held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As a reader for a policy set.
    pub fn reader(self) -> Arc<dyn ClusterReader> {
        Arc::new(self)
    }
}

impl ClusterReader for Offline {
    fn get(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<str>>, ReadError> {
        self.0.objects(kind).get(namespace, name)
    }

    fn list(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        selector: &Selector,
        max_bytes: usize,
    ) -> Result<String, ReadError> {
        self.0.objects(kind).list(namespace, selector, max_bytes)
    }
}
