//! Reading cluster objects from a policy (contract 0.3): typed with k8s-openapi,
//! answered by the host's caches in the server, by the objects given offline in
//! `stsguard eval --context` and `stsguard test`, and by a fake cluster
//! (`testing::Cluster`) in native unit tests.
//!
//! A policy declares what it reads in [`Policy::READS`](crate::Policy::READS);
//! reading anything else is refused. Not found is not an error: [`get`] answers
//! `None`, [`list`] an empty `Vec`. An error ([`ReadError`]) converts into the
//! policy's [`Error`](crate::Error) with `?`, so the configured `failurePolicy`
//! decides what an unanswerable read means.
//!
//! ```no_run
//! use stsguard_policy::cluster;
//! use stsguard_policy::k8s_openapi::api::core::v1::Service;
//! # fn f() -> Result<(), stsguard_policy::Error> {
//! let web: Option<Service> = cluster::get("default", "web")?;
//! let all: Vec<Service> = cluster::list("default", "app=web")?;
//! # Ok(()) }
//! ```

use std::cell::RefCell;

use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope, Resource};
use serde::de::DeserializeOwned;
use stsguard_contract::cluster::{self as rules, Snapshot};
pub use stsguard_contract::cluster::{LabelSelector, Labels, ReadError, ResourceKind, Selector};

/// A kind a policy reads, as a `const`: `Kind::of::<Service>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// `v1`, `policy/v1`, ...
    pub api_version: &'static str,
    /// `Service`, ...
    pub kind: &'static str,
}

impl Kind {
    /// The kind of a k8s-openapi type.
    pub const fn of<K: Resource>() -> Self {
        Self {
            api_version: K::API_VERSION,
            kind: K::KIND,
        }
    }

    /// The contract's form.
    pub fn resource_kind(&self) -> ResourceKind {
        ResourceKind::new(self.api_version, self.kind)
    }
}

/// One namespaced object, `None` when there is none.
pub fn get<K>(namespace: &str, name: &str) -> Result<Option<K>, ReadError>
where
    K: Resource<Scope = NamespaceResourceScope> + DeserializeOwned,
{
    get_as(&Kind::of::<K>().resource_kind(), Some(namespace), name)
}

/// One cluster-scoped object (a StorageClass), `None` when there is none.
pub fn get_cluster_scoped<K>(name: &str) -> Result<Option<K>, ReadError>
where
    K: Resource<Scope = ClusterResourceScope> + DeserializeOwned,
{
    get_as(&Kind::of::<K>().resource_kind(), None, name)
}

/// The namespaced objects in `namespace` that `selector` selects (kubectl's
/// syntax, `""` for all), sorted by name.
pub fn list<K>(namespace: &str, selector: &str) -> Result<Vec<K>, ReadError>
where
    K: Resource<Scope = NamespaceResourceScope> + DeserializeOwned,
{
    list_as(&Kind::of::<K>().resource_kind(), Some(namespace), selector)
}

/// Every object of `K` in every namespace (or, for a cluster-scoped kind, all
/// of them) that `selector` selects, sorted by namespace and name.
pub fn list_all<K>(selector: &str) -> Result<Vec<K>, ReadError>
where
    K: Resource + DeserializeOwned,
{
    list_as(&Kind::of::<K>().resource_kind(), None, selector)
}

/// [`get`] of any kind (a custom resource: `ResourceKind::new("example.com/v1",
/// "Database")`) into any type that reads the object: a small view of the
/// fields the policy needs is cheaper than the whole typed object, and
/// `serde_json::Value` reads anything. `namespace` is `None` for
/// cluster-scoped kinds.
pub fn get_as<T: DeserializeOwned>(
    kind: &ResourceKind,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<T>, ReadError> {
    read_get(kind, namespace, name)?
        .map(|json| parse(kind, &json))
        .transpose()
}

/// [`list`] of any kind into any type that reads the objects; `namespace`
/// `None` lists every namespace (and cluster-scoped kinds).
pub fn list_as<T: DeserializeOwned>(
    kind: &ResourceKind,
    namespace: Option<&str>,
    selector: &str,
) -> Result<Vec<T>, ReadError> {
    let json = read_list(kind, namespace, selector)?;
    parse(kind, &json)
}

fn parse<T: DeserializeOwned>(kind: &ResourceKind, json: &str) -> Result<T, ReadError> {
    serde_json::from_str(json).map_err(|e| {
        ReadError::Invalid(format!(
            "the {kind} the host returned does not fit the type read into: {e}"
        ))
    })
}

/// What a native run answers reads from: a fake cluster and the kinds the
/// running policy declares, set by the test harness around each evaluation.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
struct Fake {
    snapshot: Snapshot,
    declared: Vec<ResourceKind>,
    memory_limit: u64,
}

thread_local! {
    static FAKE: RefCell<Option<Fake>> = const { RefCell::new(None) };
}

/// The memory limit a native run assumes, for the size bound of `list`: the
/// host's default `memoryLimit`.
pub(crate) const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;

/// Runs `f` with reads answered from `snapshot`, as a policy declaring
/// `declared` (the test harness's entry point).
pub(crate) fn with_fake<R>(
    snapshot: &Snapshot,
    declared: Vec<ResourceKind>,
    f: impl FnOnce() -> R,
) -> R {
    let previous = FAKE.with(|fake| {
        fake.replace(Some(Fake {
            snapshot: snapshot.clone(),
            declared,
            memory_limit: DEFAULT_MEMORY_LIMIT,
        }))
    });
    let result = f();
    FAKE.with(|fake| fake.replace(previous));
    result
}

// In a component, reads go to the host; the fake serves native runs only.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn with_native<R>(
    kind: &ResourceKind,
    f: impl FnOnce(&Fake) -> Result<R, ReadError>,
) -> Result<R, ReadError> {
    FAKE.with(|fake| match &*fake.borrow() {
        Some(fake) => {
            rules::check_declared(&fake.declared, kind)?;
            f(fake)
        }
        None => Err(ReadError::NotSynced(format!(
            "{kind} cannot be read: natively, reads are answered only inside the test harness \
             (stsguard_policy::testing), from its fake cluster"
        ))),
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn read_get(
    kind: &ResourceKind,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<String>, ReadError> {
    with_native(kind, |fake| {
        Ok(fake
            .snapshot
            .objects(kind)
            .get(namespace, name)?
            .map(|json| json.to_string()))
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn read_list(
    kind: &ResourceKind,
    namespace: Option<&str>,
    selector: &str,
) -> Result<String, ReadError> {
    let selector = Selector::parse(selector).map_err(ReadError::Invalid)?;
    with_native(kind, |fake| {
        fake.snapshot.objects(kind).list(
            namespace,
            &selector,
            rules::max_list_bytes(fake.memory_limit),
        )
    })
}

#[cfg(target_arch = "wasm32")]
fn read_get(
    kind: &ResourceKind,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<String>, ReadError> {
    crate::runtime::bindings::stsguard::policy::cluster::get_object(
        &wit_kind(kind),
        namespace,
        name,
    )
    .map_err(from_wit)
}

#[cfg(target_arch = "wasm32")]
fn read_list(
    kind: &ResourceKind,
    namespace: Option<&str>,
    selector: &str,
) -> Result<String, ReadError> {
    crate::runtime::bindings::stsguard::policy::cluster::list_objects(
        &wit_kind(kind),
        namespace,
        selector,
    )
    .map_err(from_wit)
}

#[cfg(target_arch = "wasm32")]
fn wit_kind(
    kind: &ResourceKind,
) -> crate::runtime::bindings::stsguard::policy::types::ResourceKind {
    crate::runtime::bindings::stsguard::policy::types::ResourceKind {
        api_version: kind.api_version.clone(),
        kind: kind.kind.clone(),
    }
}

#[cfg(target_arch = "wasm32")]
fn from_wit(error: crate::runtime::bindings::stsguard::policy::cluster::ReadError) -> ReadError {
    use crate::runtime::bindings::stsguard::policy::cluster::ReadError as Wit;
    match error {
        Wit::NotGranted(m) => ReadError::NotGranted(m),
        Wit::NotSynced(m) => ReadError::NotSynced(m),
        Wit::TooLarge(m) => ReadError::TooLarge(m),
        Wit::Invalid(m) => ReadError::Invalid(m),
    }
}
