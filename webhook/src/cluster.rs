//! What policies read of the cluster (contract 0.3): one watch-backed cache per
//! kind some loaded policy is granted, shared by every policy, so that a read
//! during an admission review is a lookup in memory and never a call to the API
//! server.
//!
//! ```text
//!   start / reload ──watch(kinds)──► per kind: discovery (plural, scope)
//!                                      └─► kube-runtime watcher: list in pages, then watch;
//!                                          re-lists after a lost watch, with backoff
//!                                            └─► Objects (stsguard-contract): each object kept
//!                                                as stripped JSON text, by namespace and name
//!   policy ── cluster.get-object / list-objects ──► Cluster (a ClusterReader) ──► Objects
//!   /readyz, /metrics ◄── status per kind: synced | pending | failed, objects, bytes,
//!                         watch errors, last event
//! ```
//!
//! Why text and not kube-runtime's `reflector::Store`: a store holds parsed
//! objects (a `DynamicObject` is several times its JSON in memory, and a read
//! would serialize it again on every review); the text is what a read hands to
//! the policy anyway. 10,000 Services are ~10 MB of text (docs/performance.md).
//!
//! A kind the ServiceAccount may not list (403) or that the API server does not
//! serve (a CRD not installed) is named in the log, in `/readyz` and in the
//! metrics; its reads fail as not synced, so each policy's failurePolicy decides.
//! The server does not wait for such a kind to become ready, and keeps retrying
//! it. When the API server goes away, reads keep answering from the cache, and
//! readiness and metrics say how stale it is.

mod offline;

pub use offline::Offline;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::Scope;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use stsguard_contract::cluster::{Objects, ReadError, ResourceKind, Selector};
use tokio::sync::broadcast;

use crate::engine::ClusterReader;

/// How long `/readyz` waits for a kind's first list before it turns ready
/// without it, unless `--cluster-sync-timeout` says otherwise.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the server reads the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Access {
    /// When a kubeconfig (`KUBECONFIG`, `~/.kube/config`) or a pod's service
    /// account gives a cluster.
    #[default]
    Auto,
    /// Never: policies that read the cluster cannot be loaded, and the
    /// default chain leaves out the built-ins that do.
    Off,
}

/// How the server reads the cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterOptions {
    pub access: Access,
    /// How long readiness (and a reload) waits for a kind's first list.
    pub sync_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            access: Access::Auto,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
        }
    }
}

/// The cluster to read, as `options` say; `None` (and one log line saying the
/// checks that read the cluster are off) when there is none.
pub async fn connect(options: ClusterOptions) -> Option<Arc<Cluster>> {
    if options.access == Access::Off {
        tracing::info!(
            "cluster access is off (--cluster-access off): policies that read the cluster are \
             not run"
        );
        return None;
    }
    let client = match kube::Config::infer().await {
        Ok(config) => Client::try_from(config).map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match client {
        Ok(client) => Some(Cluster::new(client, options.sync_timeout)),
        Err(error) => {
            tracing::info!(
                reason = %error,
                "no cluster (no kubeconfig, no service account): the checks that read the \
                 cluster are off"
            );
            None
        }
    }
}

/// What changed in a cache, for whoever re-evaluates on it (the watching
/// audit): objects of one namespace, or possibly anything (a cluster-scoped
/// kind, a re-list, or changes missed by a slow reader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Namespace(String),
    Everything,
}

/// Where a kind's cache is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Its first list is under way (or is being retried after a transient error).
    Pending(String),
    /// Its objects are known; reads answer.
    Synced,
    /// The API server refused it for a reason retrying will not soon fix (403,
    /// not installed); still retried, in case RBAC or the CRD arrives.
    Failed(String),
}

/// A kind's cache as `/readyz` and the metrics report it.
#[derive(Debug, Clone)]
pub struct KindStatus {
    pub kind: ResourceKind,
    pub phase: Phase,
    pub objects: usize,
    pub bytes: usize,
    pub watch_errors: u64,
    /// When the last list or watch event arrived.
    pub last_event: Option<SystemTime>,
    /// The watch's error since its last event, if it has failed since: the
    /// cache still answers, with what it had.
    pub stale: Option<String>,
}

/// One kind's cache.
struct KindCache {
    kind: ResourceKind,
    changes: broadcast::Sender<Change>,
    /// `None` until the first list is complete.
    objects: RwLock<Option<Objects>>,
    state: Mutex<State>,
    watch_errors: AtomicU64,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    last_event: Option<SystemTime>,
    stale: Option<String>,
}

impl KindCache {
    fn new(kind: ResourceKind, changes: broadcast::Sender<Change>) -> Self {
        Self {
            kind,
            changes,
            objects: RwLock::new(None),
            state: Mutex::new(State {
                phase: Phase::Pending("its first list has not completed".into()),
                last_event: None,
                stale: None,
            }),
            watch_errors: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A watch event about an object of `namespace` (empty: cluster-scoped).
    fn event(&self, namespace: &str) {
        let mut state = self.state();
        state.last_event = Some(SystemTime::now());
        state.stale = None;
        drop(state);
        // Nobody listening (the server) is fine.
        let _ = self.changes.send(if namespace.is_empty() {
            Change::Everything
        } else {
            Change::Namespace(namespace.to_string())
        });
    }

    fn synced(&self, objects: Objects) {
        let count = objects.len();
        *self.objects.write().unwrap_or_else(|e| e.into_inner()) = Some(objects);
        let mut state = self.state();
        let first = !matches!(state.phase, Phase::Synced);
        state.phase = Phase::Synced;
        state.last_event = Some(SystemTime::now());
        state.stale = None;
        drop(state);
        let _ = self.changes.send(Change::Everything);
        if first {
            tracing::info!(kind = %self.kind, objects = count, "cluster cache synced");
        }
    }

    /// A failure of discovery, the list or the watch: counted, logged, and
    /// (before the first sync) the reason the kind is not ready.
    fn failed(&self, error: Failure) {
        self.watch_errors.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state();
        let message = error.message().to_string();
        let changed = state.stale.as_deref() != Some(&message);
        if !matches!(state.phase, Phase::Synced) {
            state.phase = match &error {
                Failure::Lasting(m) => Phase::Failed(m.clone()),
                Failure::Passing(m) => Phase::Pending(m.clone()),
            };
        }
        state.stale = Some(message.clone());
        drop(state);
        // Once per distinct error: a watch retried with backoff repeats it.
        if changed {
            tracing::warn!(kind = %self.kind, error = %message, "cluster cache: {message}");
        }
    }

    fn status(&self) -> KindStatus {
        let (objects, bytes) = self
            .objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or((0, 0), |o| (o.len(), o.bytes()));
        let state = self.state();
        KindStatus {
            kind: self.kind.clone(),
            phase: state.phase.clone(),
            objects,
            bytes,
            watch_errors: self.watch_errors.load(Ordering::Relaxed),
            last_event: state.last_event,
            stale: state.stale.clone(),
        }
    }

    fn read<R>(&self, f: impl FnOnce(&Objects) -> Result<R, ReadError>) -> Result<R, ReadError> {
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        match objects.as_ref() {
            Some(objects) => f(objects),
            None => {
                let why = match &self.state().phase {
                    Phase::Pending(why) | Phase::Failed(why) => why.clone(),
                    Phase::Synced => "it is being listed again".into(),
                };
                Err(ReadError::NotSynced(format!(
                    "{} is not synced in stsguard's cache: {why}",
                    self.kind
                )))
            }
        }
    }
}

/// What went wrong, and whether retrying soon is likely to help.
enum Failure {
    /// Forbidden, not installed: the operator has to act.
    Lasting(String),
    /// A connection error, a timeout, a 5xx: retried with backoff.
    Passing(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Self::Lasting(m) | Self::Passing(m) => m,
        }
    }

    fn of_api(kind: &ResourceKind, resource: &str, error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 403 => Self::Lasting(format!(
                "forbidden: stsguard's ServiceAccount may not list and watch {resource}: grant \
                 `get, list, watch` on it (the chart renders this from each policy's `reads`); \
                 the API server said: {}",
                status.message
            )),
            kube::Error::Api(status) if status.code == 404 => Self::Lasting(format!(
                "{kind} is not served by the API server (is its CustomResourceDefinition \
                 installed?): {}",
                status.message
            )),
            kube::Error::Api(status) if status.code == 401 => Self::Lasting(format!(
                "the API server refused stsguard's credentials: {}",
                status.message
            )),
            kube::Error::Discovery(error) => Self::Lasting(format!(
                "{kind} is not served by the API server (is its CustomResourceDefinition \
                 installed?): {error}"
            )),
            other => Self::Passing(format!(
                "cannot reach the API server for {resource}: {other}"
            )),
        }
    }
}

/// The caches of every watched kind.
pub struct Cluster {
    client: Client,
    changes: broadcast::Sender<Change>,
    kinds: RwLock<BTreeMap<ResourceKind, Arc<KindCache>>>,
    started: Instant,
    sync_timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("kinds", &self.kinds().len())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// No kinds watched yet. `sync_timeout` bounds how long readiness waits for
    /// a kind's first list.
    pub fn new(client: Client, sync_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            client,
            changes: broadcast::channel(1024).0,
            kinds: RwLock::default(),
            started: Instant::now(),
            sync_timeout,
        })
    }

    fn kinds(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ResourceKind, Arc<KindCache>>> {
        self.kinds.read().unwrap_or_else(|e| e.into_inner())
    }

    fn cache(&self, kind: &ResourceKind) -> Option<Arc<KindCache>> {
        self.kinds().get(kind).cloned()
    }

    /// Starts a cache for each kind not watched yet (on the current tokio
    /// runtime). Kinds no longer read are kept: a reload back to them is instant.
    pub fn watch(&self, kinds: &[ResourceKind]) {
        let mut watched = self.kinds.write().unwrap_or_else(|e| e.into_inner());
        for kind in kinds {
            if watched.contains_key(kind) {
                continue;
            }
            let cache = Arc::new(KindCache::new(kind.clone(), self.changes.clone()));
            watched.insert(kind.clone(), cache.clone());
            tokio::spawn(run(self.client.clone(), cache));
        }
    }

    /// Waits until each of `kinds` is synced or has failed lastingly, at most
    /// `timeout`; whether they all did.
    pub async fn wait_settled(&self, kinds: &[ResourceKind], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let settled = kinds.iter().all(|kind| {
                self.cache(kind)
                    .is_some_and(|c| !matches!(c.state().phase, Phase::Pending(_)))
            });
            if settled || Instant::now() >= deadline {
                return settled;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What changes in the caches from now on.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// How long readiness waits for a kind's first list.
    pub fn sync_timeout(&self) -> Duration {
        self.sync_timeout
    }

    /// Every watched kind's cache.
    pub fn status(&self) -> Vec<KindStatus> {
        self.kinds().values().map(|c| c.status()).collect()
    }

    /// `Err` naming the kinds still in their first list, until
    /// `--cluster-sync-timeout` after start; after that, and for kinds that
    /// failed lastingly, readiness does not wait (their reads fail, and each
    /// policy's failurePolicy decides).
    pub fn readiness(&self) -> Result<(), String> {
        if self.started.elapsed() >= self.sync_timeout {
            return Ok(());
        }
        let pending: Vec<String> = self
            .status()
            .into_iter()
            .filter_map(|s| match s.phase {
                Phase::Pending(why) => Some(format!("{} ({why})", s.kind)),
                _ => None,
            })
            .collect();
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "cluster objects not synced yet: {}",
                pending.join(", ")
            ))
        }
    }

    /// One line per watched kind, for `/readyz`.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for status in self.status() {
            let _ = write!(text, "cluster {}: ", status.kind);
            let _ = match &status.phase {
                Phase::Synced => write!(text, "synced, {} objects", status.objects),
                Phase::Pending(why) => write!(text, "NOT SYNCED (pending: {why})"),
                Phase::Failed(why) => write!(text, "NOT SYNCED: {why}"),
            };
            if let (Phase::Synced, Some(stale)) = (&status.phase, &status.stale) {
                let age = status
                    .last_event
                    .and_then(|t| t.elapsed().ok())
                    .map_or("?".to_string(), |a| format!("{}s", a.as_secs()));
                let _ = write!(text, "; STALE (last event {age} ago): {stale}");
            }
            text.push('\n');
        }
        text
    }

    /// The Prometheus collector of the caches' metrics; `None` (no cluster)
    /// still names the families, without samples.
    pub fn collector(cluster: Option<&Arc<Self>>) -> Box<dyn Collector> {
        Box::new(ClusterCollector(cluster.cloned()))
    }
}

impl ClusterReader for Cluster {
    fn get(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<str>>, ReadError> {
        self.cache(kind)
            .ok_or_else(|| not_watched(kind))?
            .read(|objects| objects.get(namespace, name))
    }

    fn list(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        selector: &Selector,
        max_bytes: usize,
    ) -> Result<String, ReadError> {
        self.cache(kind)
            .ok_or_else(|| not_watched(kind))?
            .read(|objects| objects.list(namespace, selector, max_bytes))
    }
}

fn not_watched(kind: &ResourceKind) -> ReadError {
    ReadError::NotSynced(format!(
        "{kind} is not watched: no loaded policy is granted it"
    ))
}

/// Discovery, then list and watch, for as long as the server runs.
async fn run(client: Client, cache: Arc<KindCache>) {
    let kind = cache.kind.clone();
    let gvk = GroupVersionKind::gvk(kind.group(), kind.version(), &kind.kind);
    let mut delay = Duration::from_millis(500);
    let (resource, namespaced) = loop {
        match kube::discovery::pinned_kind(&client, &gvk).await {
            Ok((resource, capabilities)) => {
                break (resource, capabilities.scope == Scope::Namespaced);
            }
            Err(error) => {
                cache.failed(Failure::of_api(&kind, &kind.to_string(), &error));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let resource_name = describe_resource(&resource);
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listing: Option<Objects> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(Objects::new(kind.clone(), namespaced)),
            Ok(watcher::Event::InitApply(object)) => {
                if let Some(listing) = listing.as_mut() {
                    listing.insert(to_json(object));
                }
            }
            Ok(watcher::Event::InitDone) => {
                let objects = listing
                    .take()
                    .unwrap_or_else(|| Objects::new(kind.clone(), namespaced));
                cache.synced(objects);
            }
            Ok(watcher::Event::Apply(object)) => {
                let object = to_json(object);
                let namespace = namespace_of(&object);
                if let Some(objects) = cache
                    .objects
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                {
                    objects.insert(object);
                }
                cache.event(&namespace);
            }
            Ok(watcher::Event::Delete(object)) => {
                let object = to_json(object);
                if let (Some(key), Some(objects)) = (
                    stsguard_contract::cluster::ObjectKey::of(&object),
                    cache
                        .objects
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .as_mut(),
                ) {
                    objects.remove(&key);
                }
                cache.event(&namespace_of(&object));
            }
            Err(error) => cache.failed(match &error {
                watcher::Error::InitialListFailed(e)
                | watcher::Error::WatchStartFailed(e)
                | watcher::Error::WatchFailed(e) => Failure::of_api(&kind, &resource_name, e),
                other => Failure::Passing(format!("the watch of {resource_name} failed: {other}")),
            }),
        }
    }
}

/// `services`, `poddisruptionbudgets.policy`: how RBAC names a resource.
fn describe_resource(resource: &ApiResource) -> String {
    if resource.group.is_empty() {
        resource.plural.clone()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    }
}

fn namespace_of(object: &serde_json::Value) -> String {
    object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn to_json(object: DynamicObject) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or(serde_json::Value::Null)
}

/// The caches' metrics, read when scraped.
#[derive(Debug)]
struct ClusterCollector(Option<Arc<Cluster>>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// One gauge's value for one kind, if it has one.
type Reading<'a> = dyn Fn(&KindStatus) -> Option<f64> + 'a;

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let statuses = self.0.as_ref().map(|c| c.status()).unwrap_or_default();
        let labels = |s: &KindStatus| KindLabels {
            kind: s.kind.to_string(),
        };
        let now = SystemTime::now();
        let gauges: [(&str, &str, &Reading<'_>); 5] = [
            (
                "stsguard_cluster_objects",
                "Objects in the cache, by kind",
                &|s| Some(s.objects as f64),
            ),
            (
                "stsguard_cluster_bytes",
                "Bytes of JSON in the cache, by kind",
                &|s| Some(s.bytes as f64),
            ),
            (
                "stsguard_cluster_synced",
                "1 when the kind's objects are known (its first list completed)",
                &|s| Some(if s.phase == Phase::Synced { 1.0 } else { 0.0 }),
            ),
            (
                "stsguard_cluster_last_event_timestamp_seconds",
                "When the last list or watch event of the kind arrived",
                &|s| {
                    s.last_event?
                        .duration_since(UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs_f64())
                },
            ),
            (
                "stsguard_cluster_last_event_age_seconds",
                "Seconds since the last list or watch event of the kind arrived (a quiet kind \
                 has no events either: read it together with watch errors)",
                &|s| {
                    now.duration_since(s.last_event?)
                        .ok()
                        .map(|d| d.as_secs_f64())
                },
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for status in &statuses {
                if let Some(value) = value(status) {
                    ConstGauge::new(value).encode(family.encode_family(&labels(status))?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "stsguard_cluster_watch_errors",
            "Failed discoveries, lists and watches of the kind (each retried with backoff)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for status in &statuses {
            ConstCounter::new(status.watch_errors)
                .encode(family.encode_family(&labels(status))?)?;
        }
        Ok(())
    }
}
