//! Reading cluster objects from a policy (WIT `cluster`, contract 0.3): the
//! rules every side that answers such a read applies the same way — the
//! server's watch-backed caches, the offline context of `stsguard eval` and
//! `stsguard test`, and the SDKs' fake clusters in native unit tests.
//!
//! ```text
//!   policy ── get(kind, namespace, name) / list(kind, namespace, selector)
//!      │
//!      ▼  declared?  the kind must be in the policy's metadata `reads`     (else NotGranted)
//!      ▼  synced?    the answering side has the kind's objects            (else NotSynced)
//!      ▼  Objects    one kind's objects by namespace and name, each kept as the
//!                    JSON text a read returns (stripped of managedFields and the
//!                    last-applied annotation); a list is bounded in bytes      (else TooLarge)
//! ```
//!
//! Not found is not an error: `get` answers `None`, `list` an empty array.

pub mod selector;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use selector::{LabelSelector, Labels, Selector};

/// A kind of object a policy reads: `{apiVersion: v1, kind: Service}`. What a
/// policy declares in its metadata `reads` and an operator grants in the
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceKind {
    /// `v1`, `apps/v1`, `storage.k8s.io/v1`: as in a manifest.
    pub api_version: String,
    /// `Service`, `StorageClass`, ...
    pub kind: String,
}

impl ResourceKind {
    pub fn new(api_version: &str, kind: &str) -> Self {
        Self {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        }
    }

    /// The API group: empty for the core group (`v1`).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    /// The version within the group: `v1`.
    pub fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or(self.api_version.as_str(), |(_, version)| version)
    }

    /// Refuses what cannot name one kind: empty parts, wildcards (a policy
    /// reads kinds it names, and an operator grants exactly those: no grant of
    /// "everything", which would include Secrets), more than one `/`.
    pub fn validate(&self) -> Result<(), String> {
        let named = |text: &str| {
            !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '/'))
        };
        if !named(&self.api_version) || self.api_version.matches('/').count() > 1 {
            return Err(format!(
                "`{}` is not an apiVersion (expected e.g. `v1`, `policy/v1`, `storage.k8s.io/v1`)",
                self.api_version
            ));
        }
        if !named(&self.kind) || self.kind.contains('/') {
            return Err(format!(
                "`{}` is not a kind (expected one kind by name, e.g. `Service`: no wildcards)",
                self.kind
            ));
        }
        if self.version().is_empty() || self.group().ends_with('.') {
            return Err(format!("`{}` is not an apiVersion", self.api_version));
        }
        Ok(())
    }

    /// Whether objects of this kind live outside namespaces, for the kinds
    /// Kubernetes itself defines (a server asks the API server's discovery; the
    /// offline context, which has no API server, asks here and takes any other
    /// kind as namespaced).
    pub fn is_cluster_scoped_builtin(&self) -> bool {
        const CLUSTER_SCOPED: &[(&str, &str)] = &[
            ("", "Namespace"),
            ("", "Node"),
            ("", "PersistentVolume"),
            ("", "ComponentStatus"),
            ("storage.k8s.io", "StorageClass"),
            ("storage.k8s.io", "CSIDriver"),
            ("storage.k8s.io", "CSINode"),
            ("storage.k8s.io", "VolumeAttachment"),
            ("storage.k8s.io", "VolumeAttributesClass"),
            ("scheduling.k8s.io", "PriorityClass"),
            ("rbac.authorization.k8s.io", "ClusterRole"),
            ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
            ("apiextensions.k8s.io", "CustomResourceDefinition"),
            ("apiregistration.k8s.io", "APIService"),
            (
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration",
            ),
            (
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
            ),
            ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
            (
                "admissionregistration.k8s.io",
                "ValidatingAdmissionPolicyBinding",
            ),
            ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
            (
                "admissionregistration.k8s.io",
                "MutatingAdmissionPolicyBinding",
            ),
            ("node.k8s.io", "RuntimeClass"),
            ("networking.k8s.io", "IngressClass"),
            ("networking.k8s.io", "IPAddress"),
            ("networking.k8s.io", "ServiceCIDR"),
            ("certificates.k8s.io", "CertificateSigningRequest"),
            ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
            ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
            ("resource.k8s.io", "DeviceClass"),
            ("resource.k8s.io", "ResourceSlice"),
        ];
        CLUSTER_SCOPED
            .iter()
            .any(|(group, kind)| *group == self.group() && *kind == self.kind)
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.api_version, self.kind)
    }
}

/// Why a read got no answer (WIT `read-error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The kind is not among those the policy declares in its metadata `reads`.
    NotGranted(String),
    /// The objects of the kind are not known (yet): the cache has not finished
    /// its first list, the ServiceAccount may not watch them, the CRD is not
    /// installed, or there is no cluster.
    NotSynced(String),
    /// The answer would not fit the evaluation's memory.
    TooLarge(String),
    /// The read itself is wrong: a bad label selector, a namespace given for a
    /// cluster-scoped kind.
    Invalid(String),
}

impl ReadError {
    pub fn message(&self) -> &str {
        match self {
            Self::NotGranted(m) | Self::NotSynced(m) | Self::TooLarge(m) | Self::Invalid(m) => m,
        }
    }

    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotGranted(_) => "not_granted",
            Self::NotSynced(_) => "not_synced",
            Self::TooLarge(_) => "too_large",
            Self::Invalid(_) => "invalid",
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A read of a kind the policy did not declare is refused, naming the kind and
/// what the policy does declare.
pub fn check_declared(declared: &[ResourceKind], kind: &ResourceKind) -> Result<(), ReadError> {
    if declared.contains(kind) {
        return Ok(());
    }
    let list = if declared.is_empty() {
        "none".to_string()
    } else {
        declared
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(ReadError::NotGranted(format!(
        "the policy read {kind}, which its metadata does not declare in `reads` (it declares: \
         {list}); declare it, and the operator grants it in the policy's `reads`"
    )))
}

/// The most bytes of JSON a `list` hands a policy: a quarter of its memory
/// limit, since the policy holds the text and what it parses from it at once.
pub fn max_list_bytes(memory_limit: u64) -> usize {
    usize::try_from(memory_limit / 4).unwrap_or(usize::MAX)
}

/// The annotation `kubectl apply` keeps the whole previous manifest in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Removes what no policy needs and every object carries: `managedFields` and
/// kubectl's last-applied annotation (each often larger than the object itself).
pub fn strip(object: &mut Value) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    metadata.remove("managedFields");
    if let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
}

/// Namespace and name of an object; the namespace is empty for cluster-scoped
/// objects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// The key of a stored object, from its metadata.
    pub fn of(object: &Value) -> Option<Self> {
        let metadata = &object["metadata"];
        Some(Self {
            namespace: metadata["namespace"].as_str().unwrap_or("").to_string(),
            name: metadata["name"]
                .as_str()
                .filter(|n| !n.is_empty())?
                .to_string(),
        })
    }
}

/// One object as a read returns it.
#[derive(Debug, Clone)]
struct Entry {
    labels: Labels,
    json: Arc<str>,
}

/// The objects of one kind, indexed by namespace and name, each kept as the
/// JSON text a read hands out: a `get` copies one string, a `list` joins
/// strings, and nothing is serialized on the admission path.
#[derive(Debug, Clone)]
pub struct Objects {
    kind: ResourceKind,
    namespaced: bool,
    entries: BTreeMap<ObjectKey, Entry>,
    bytes: usize,
}

impl Objects {
    /// No objects yet of `kind`, which lives in namespaces or not.
    pub fn new(kind: ResourceKind, namespaced: bool) -> Self {
        Self {
            kind,
            namespaced,
            entries: BTreeMap::new(),
            bytes: 0,
        }
    }

    pub fn kind(&self) -> &ResourceKind {
        &self.kind
    }

    pub fn is_namespaced(&self) -> bool {
        self.namespaced
    }

    /// Objects held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of JSON text held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds or replaces an object as the API server stores it: stripped
    /// ([`strip`]), given this kind's `apiVersion` and `kind` (list items come
    /// without them), and kept as JSON text. An object without a name is ignored.
    pub fn insert(&mut self, mut object: Value) -> Option<ObjectKey> {
        let key = ObjectKey::of(&object)?;
        strip(&mut object);
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), self.kind.api_version.clone().into());
            map.insert("kind".into(), self.kind.kind.clone().into());
        }
        let labels = object["metadata"]["labels"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let json: Arc<str> = object.to_string().into();
        self.bytes += json.len();
        if let Some(old) = self.entries.insert(key.clone(), Entry { labels, json }) {
            self.bytes -= old.json.len();
        }
        Some(key)
    }

    /// Forgets an object.
    pub fn remove(&mut self, key: &ObjectKey) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.json.len();
        }
    }

    /// Forgets every object (a watch that starts over lists them again).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Checks the namespace of a read against the kind's scope.
    fn scope<'a>(&self, namespace: Option<&'a str>) -> Result<Option<&'a str>, ReadError> {
        match (self.namespaced, namespace) {
            (false, Some(ns)) => Err(ReadError::Invalid(format!(
                "{} is cluster-scoped: read it without a namespace (not `{ns}`)",
                self.kind
            ))),
            (true, Some("")) => Err(ReadError::Invalid(format!(
                "{} is namespaced: give a namespace, or none to list every namespace",
                self.kind
            ))),
            _ => Ok(namespace),
        }
    }

    /// One object, or `None` when there is none. A namespaced kind needs a
    /// namespace, a cluster-scoped one must not get one.
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Result<Option<Arc<str>>, ReadError> {
        let namespace = self.scope(namespace)?;
        if self.namespaced && namespace.is_none() {
            return Err(ReadError::Invalid(format!(
                "{} is namespaced: `get` needs the namespace of `{name}`",
                self.kind
            )));
        }
        let key = ObjectKey {
            namespace: namespace.unwrap_or("").to_string(),
            name: name.to_string(),
        };
        Ok(self.entries.get(&key).map(|e| e.json.clone()))
    }

    /// The objects in `namespace` (every namespace when `None`) that `selector`
    /// selects, as a JSON array sorted by namespace and name; `TooLarge` past
    /// `max_bytes` of text.
    pub fn list(
        &self,
        namespace: Option<&str>,
        selector: &Selector,
        max_bytes: usize,
    ) -> Result<String, ReadError> {
        let namespace = self.scope(namespace)?;
        let selected: Vec<&Entry> = match namespace {
            Some(ns) => self
                .entries
                .range(
                    ObjectKey {
                        namespace: ns.to_string(),
                        name: String::new(),
                    }..,
                )
                .take_while(|(key, _)| key.namespace == ns)
                .map(|(_, e)| e)
                .filter(|e| selector.matches(&e.labels))
                .collect(),
            None => self
                .entries
                .values()
                .filter(|e| selector.matches(&e.labels))
                .collect(),
        };
        // `[`, the objects, a comma between each two, `]`.
        let bytes = selected.iter().map(|e| e.json.len()).sum::<usize>()
            + selected.len().saturating_sub(1)
            + 2;
        if bytes > max_bytes {
            let scope = namespace.map_or("every namespace".to_string(), |ns| {
                format!("namespace {ns}")
            });
            let selected_by = if selector.is_empty() {
                String::new()
            } else {
                format!(" with labels `{selector}`")
            };
            return Err(ReadError::TooLarge(format!(
                "listing {kind} in {scope}{selected_by} gives {count} objects, {bytes} bytes of \
                 JSON, more than the {max_bytes} bytes a read may hand this policy (a quarter of \
                 its memoryLimit); narrow the list by namespace or label selector, or raise \
                 memoryLimit",
                kind = self.kind,
                count = selected.len(),
            )));
        }
        let mut out = String::with_capacity(bytes);
        out.push('[');
        for (i, entry) in selected.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&entry.json);
        }
        out.push(']');
        Ok(out)
    }
}

/// Cluster objects given whole, not watched: the offline context of `stsguard
/// eval` and `stsguard test`, and the SDKs' fake cluster. Every kind is known
/// (synced), with the objects given or none: "no context" is an empty cluster.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    kinds: BTreeMap<ResourceKind, Objects>,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an object by its `apiVersion` and `kind`. A kind is namespaced
    /// unless Kubernetes defines it cluster-scoped
    /// ([`ResourceKind::is_cluster_scoped_builtin`]); a namespaced object without
    /// a namespace goes to `default`, where `kubectl apply` would put it.
    pub fn insert(&mut self, mut object: Value) -> Result<(), String> {
        let kind = ResourceKind {
            api_version: object["apiVersion"].as_str().unwrap_or("").to_string(),
            kind: object["kind"].as_str().unwrap_or("").to_string(),
        };
        kind.validate()
            .map_err(|e| format!("an object needs apiVersion and kind: {e}"))?;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            return Err(format!("a {kind} without metadata.name"));
        }
        let namespaced = !kind.is_cluster_scoped_builtin();
        let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
        match (namespaced, namespace.as_deref()) {
            (true, None | Some("")) => object["metadata"]["namespace"] = Value::from("default"),
            (false, Some(ns)) if !ns.is_empty() => {
                return Err(format!(
                    "{kind} {name} has namespace `{ns}`, but {kind} is cluster-scoped"
                ));
            }
            (false, _) => {
                if let Some(metadata) = object["metadata"].as_object_mut() {
                    metadata.remove("namespace");
                }
            }
            _ => {}
        }
        self.kinds
            .entry(kind.clone())
            .or_insert_with(|| Objects::new(kind, namespaced))
            .insert(object);
        Ok(())
    }

    /// The objects of `kind` (none given: an empty set of the kind's scope).
    pub fn objects(&self, kind: &ResourceKind) -> Cow<'_, Objects> {
        match self.kinds.get(kind) {
            Some(objects) => Cow::Borrowed(objects),
            None => Cow::Owned(Objects::new(
                kind.clone(),
                !kind.is_cluster_scoped_builtin(),
            )),
        }
    }

    /// Objects held, of every kind.
    pub fn len(&self) -> usize {
        self.kinds.values().map(Objects::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(namespace: &str, name: &str, labels: Value) -> Value {
        json!({
            "metadata": {
                "name": name, "namespace": namespace, "labels": labels,
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {LAST_APPLIED: "{...}", "keep": "me"},
            },
            "spec": {"clusterIP": "None"},
        })
    }

    fn services() -> Objects {
        let mut objects = Objects::new(ResourceKind::new("v1", "Service"), true);
        objects.insert(service("b", "web", json!({"app": "web"})));
        objects.insert(service("a", "web", json!({"app": "web"})));
        objects.insert(service("a", "db", json!({"app": "db"})));
        objects.insert(service("ab", "x", json!({})));
        objects
    }

    #[test]
    fn get_answers_the_stored_object_stripped_and_typed() {
        let objects = services();
        let text = objects.get(Some("a"), "web").unwrap().unwrap();
        let object: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(object["apiVersion"], "v1");
        assert_eq!(object["kind"], "Service");
        assert!(object["metadata"].get("managedFields").is_none());
        assert_eq!(object["metadata"]["annotations"], json!({"keep": "me"}));
        assert_eq!(objects.get(Some("a"), "nothing").unwrap(), None);
        assert_eq!(objects.get(Some("c"), "web").unwrap(), None);
    }

    #[test]
    fn list_selects_by_namespace_and_labels_in_order() {
        let objects = services();
        let names = |text: String| -> Vec<String> {
            let items: Vec<Value> = serde_json::from_str(&text).unwrap();
            items
                .iter()
                .map(|o| {
                    format!(
                        "{}/{}",
                        o["metadata"]["namespace"].as_str().unwrap(),
                        o["metadata"]["name"].as_str().unwrap()
                    )
                })
                .collect()
        };
        let all = Selector::default();
        assert_eq!(
            names(objects.list(Some("a"), &all, usize::MAX).unwrap()),
            ["a/db", "a/web"],
            "namespace `a` does not include `ab`"
        );
        assert_eq!(
            names(objects.list(None, &all, usize::MAX).unwrap()),
            ["a/db", "a/web", "ab/x", "b/web"]
        );
        let web = Selector::parse("app=web").unwrap();
        assert_eq!(
            names(objects.list(None, &web, usize::MAX).unwrap()),
            ["a/web", "b/web"]
        );
        assert_eq!(objects.list(Some("zzz"), &all, usize::MAX).unwrap(), "[]");
    }

    #[test]
    fn a_list_past_its_bound_is_too_large_and_says_how_to_narrow_it() {
        let objects = services();
        let all = Selector::default();
        let whole = objects.list(None, &all, usize::MAX).unwrap();
        assert!(
            objects.list(None, &all, whole.len()).is_ok(),
            "exactly at the bound"
        );
        let error = objects.list(None, &all, whole.len() - 1).unwrap_err();
        assert_eq!(error.reason(), "too_large");
        assert!(error.message().contains("4 objects"), "{error}");
        assert!(error.message().contains("narrow the list"), "{error}");
    }

    #[test]
    fn scope_mistakes_are_invalid_reads() {
        let objects = services();
        assert_eq!(objects.get(None, "web").unwrap_err().reason(), "invalid");
        let mut classes = Objects::new(
            ResourceKind::new("storage.k8s.io/v1", "StorageClass"),
            false,
        );
        classes.insert(json!({"metadata": {"name": "standard"}}));
        assert!(classes.get(None, "standard").unwrap().is_some());
        let error = classes.get(Some("default"), "standard").unwrap_err();
        assert!(error.message().contains("cluster-scoped"), "{error}");
    }

    #[test]
    fn replacing_and_removing_keep_the_byte_count() {
        let mut objects = services();
        let before = objects.bytes();
        let key = objects
            .insert(service(
                "a",
                "web",
                json!({"app": "web", "more": "labels-here"}),
            ))
            .unwrap();
        assert!(objects.bytes() > before);
        objects.remove(&key);
        assert_eq!(objects.len(), 3);
        let sum: usize = objects
            .list(None, &Selector::default(), usize::MAX)
            .map(|text| {
                let items: Vec<Value> = serde_json::from_str(&text).unwrap();
                items.iter().map(|o| o.to_string().len()).sum()
            })
            .unwrap();
        assert_eq!(objects.bytes(), sum);
        objects.clear();
        assert_eq!((objects.len(), objects.bytes()), (0, 0));
    }

    #[test]
    fn kinds_are_validated_and_never_wildcards() {
        assert!(ResourceKind::new("v1", "Service").validate().is_ok());
        assert!(
            ResourceKind::new("policy/v1", "PodDisruptionBudget")
                .validate()
                .is_ok()
        );
        for (api_version, kind) in [
            ("v1", "*"),
            ("*", "Service"),
            ("", "Service"),
            ("a/b/c", "X"),
            ("v1", ""),
        ] {
            assert!(
                ResourceKind::new(api_version, kind).validate().is_err(),
                "{api_version} {kind}"
            );
        }
        let class = ResourceKind::new("storage.k8s.io/v1", "StorageClass");
        assert_eq!((class.group(), class.version()), ("storage.k8s.io", "v1"));
        assert!(class.is_cluster_scoped_builtin());
        assert!(!ResourceKind::new("v1", "Service").is_cluster_scoped_builtin());
    }

    #[test]
    fn undeclared_reads_are_refused_naming_the_kind() {
        let declared = [ResourceKind::new("v1", "Service")];
        assert!(check_declared(&declared, &ResourceKind::new("v1", "Service")).is_ok());
        let error = check_declared(&declared, &ResourceKind::new("v1", "Secret")).unwrap_err();
        assert_eq!(error.reason(), "not_granted");
        assert!(error.message().contains("v1 Secret"), "{error}");
        assert!(error.message().contains("declares: v1 Service"), "{error}");
    }

    #[test]
    fn a_snapshot_places_objects_by_kind_and_scope() {
        let mut snapshot = Snapshot::new();
        snapshot
            .insert(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}}))
            .unwrap();
        snapshot
            .insert(
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                           "metadata": {"name": "fast"}}),
            )
            .unwrap();
        let services = snapshot.objects(&ResourceKind::new("v1", "Service"));
        assert!(
            services.get(Some("default"), "web").unwrap().is_some(),
            "defaulted namespace"
        );
        let classes = snapshot.objects(&ResourceKind::new("storage.k8s.io/v1", "StorageClass"));
        assert!(classes.get(None, "fast").unwrap().is_some());
        let none = snapshot.objects(&ResourceKind::new("policy/v1", "PodDisruptionBudget"));
        assert_eq!(
            none.list(Some("default"), &Selector::default(), 100)
                .unwrap(),
            "[]"
        );
        for (object, says) in [
            (
                json!({"kind": "Service", "metadata": {"name": "x"}}),
                "apiVersion",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {}}),
                "metadata.name",
            ),
            (
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": "x", "namespace": "a"}}),
                "cluster-scoped",
            ),
        ] {
            let error = snapshot.insert(object).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
        assert_eq!(snapshot.len(), 2);
    }
}
