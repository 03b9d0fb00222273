//! The request a policy decides about: one AdmissionRequest, read once.

use std::cell::OnceCell;
use std::marker::PhantomData;

use k8s_openapi::Resource;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use stsguard_contract::GroupVersionKind;

use crate::Error;

pub use stsguard_contract::Operation;

/// The parts of the AdmissionRequest JSON the SDK reads; the rest is skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Wire {
    #[serde(default)]
    uid: String,
    pub(crate) kind: GroupVersionKind,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    pub(crate) operation: Operation,
    /// Kept as text until a policy asks for it: most never do.
    #[serde(default)]
    old_object: Option<Box<RawValue>>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    user_info: UserInfo,
}

#[derive(Deserialize, Default)]
struct UserInfo {
    #[serde(default)]
    username: String,
}

/// Whether a request for `gvk` is for the policy's object type `K` (the one
/// target the SDK derives from it, with no wildcards).
pub(crate) fn matches_kind<K: Resource>(gvk: &GroupVersionKind) -> bool {
    gvk.group == K::GROUP && gvk.version == K::VERSION && gvk.kind == K::KIND
}

/// One CREATE or UPDATE of a `K`: the object, and what the request says about it.
///
/// **One way to read the object: [`Request::object_view`]**, into any serde type —
/// a small struct with just the fields the policy needs (the fast way in
/// WebAssembly, where building the whole object costs more than most policies'
/// own work), or the whole typed k8s-openapi object (`request.object_view::<StatefulSet>()`).
/// The stored object of an UPDATE is read the same way ([`Request::old_object_view`]).
/// Changes go back with [`Verdict::set`](crate::Verdict::set).
pub struct Request<K> {
    uid: String,
    name: String,
    namespace: String,
    operation: Operation,
    dry_run: bool,
    username: String,
    /// The object as the host passed it (the WIT `object` argument), kept as
    /// text: a policy reads its own view of it.
    object_text: String,
    object_head: OnceCell<Head>,
    old_object_text: Option<Box<RawValue>>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource + DeserializeOwned + serde::Serialize> Request<K> {
    /// The object read as `V`: a policy's own serde view of the fields it needs
    /// (missing optional fields are `None`; see [`json::null_as_default`](crate::json::null_as_default)
    /// for required ones), or `K` itself for the whole typed object.
    ///
    /// An object the view refuses is read as `K` first and the view taken from
    /// that, so an object k8s-openapi refuses fails with k8s-openapi's error
    /// (`cannot read \`object\` as apps/v1 StatefulSet: ...`) and a view never
    /// sees a shape the typed object would not have. The error fails the
    /// evaluation when returned with `?`.
    pub fn object_view<V: DeserializeOwned>(&self) -> Result<V, Error> {
        if let Ok(view) = serde_json::from_str::<V>(&self.object_text) {
            return Ok(view);
        }
        let json: Value = serde_json::from_str(&self.object_text)
            .map_err(|e| Error::new(format!("the object is not JSON: {e}")))?;
        let typed = serde_json::to_value(read_typed::<K>(&json, "object")?)?;
        Ok(V::deserialize(&typed)?)
    }
}

impl<K> Request<K> {
    /// `None` when there is no object (`null`; CREATE and UPDATE always have one).
    pub(crate) fn from_wire(wire: Wire, object_text: String) -> Result<Option<Self>, String> {
        if object_text.trim() == "null" {
            return Ok(None);
        }
        let object_head = OnceCell::new();
        let name = match wire.name.filter(|n| !n.is_empty()) {
            Some(name) => name,
            None => {
                let head = object_head.get_or_init(|| Head::read(&object_text));
                let metadata = &head.metadata;
                match (&metadata.name, &metadata.generate_name) {
                    (Some(name), _) if !name.is_empty() => name.clone(),
                    (_, Some(prefix)) => format!("{prefix}*"),
                    _ => String::new(),
                }
            }
        };
        Ok(Some(Self {
            uid: wire.uid,
            name,
            namespace: wire.namespace.unwrap_or_default(),
            operation: wire.operation,
            dry_run: wire.dry_run.unwrap_or(false),
            username: wire.user_info.username,
            object_text,
            object_head,
            old_object_text: wire.old_object,
            kind: PhantomData,
        }))
    }

    /// The stored object on UPDATE read as `V` (as [`Request::object_view`];
    /// the API server wrote it, so there is no typed fallback); `Ok(None)` on
    /// CREATE.
    pub fn old_object_view<V: DeserializeOwned>(&self) -> Result<Option<V>, Error> {
        let Some(text) = &self.old_object_text else {
            return Ok(None);
        };
        if text.get() == "null" {
            return Ok(None);
        }
        serde_json::from_str(text.get())
            .map(Some)
            .map_err(|e| Error::new(format!("cannot read `oldObject`: {e}")))
    }

    /// CREATE or UPDATE.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The request's uid, for log lines.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The object's name; `<generateName>*` when the API server has not named it yet.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object's namespace; empty for cluster-scoped objects.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether this is a dry run (`kubectl apply --dry-run=server`).
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The user making the request.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The value of an annotation on the object, if present. Read without
    /// reading the rest of the object.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        let head = self
            .object_head
            .get_or_init(|| Head::read(&self.object_text));
        head.metadata.annotations.get(key)?.as_str()
    }

    /// A `"true"` / `"false"` annotation: absent means `false`; any other value is
    /// an error message that names the annotation and the value, ready to be
    /// shown to the user.
    pub fn flag_annotation(&self, key: &str) -> Result<bool, String> {
        match self.annotation(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(format!(
                "annotation {key} must be \"true\" or \"false\", not {}",
                quote_short(other)
            )),
        }
    }
}

/// The object's name and annotations, read without building the whole tree.
#[derive(Default)]
struct Head {
    metadata: HeadMetadata,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeadMetadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    /// Values as JSON: a value that is not a string reads as absent.
    #[serde(default, deserialize_with = "crate::json::null_as_default")]
    annotations: std::collections::BTreeMap<String, Value>,
}

impl Head {
    /// Reads `metadata` and stops there: the API server writes it before `spec`,
    /// so the rest of the object (most of it) is not scanned again. An object
    /// whose metadata has an unexpected shape has no name or annotations here;
    /// the policy's own view reports the shape.
    fn read(text: &str) -> Self {
        let mut metadata = None;
        let mut reader = serde_json::Deserializer::from_str(text);
        // Ends in the "stop" error once metadata is read, by design.
        let _ = serde::Deserializer::deserialize_map(
            &mut reader,
            MetadataOnly {
                found: &mut metadata,
            },
        );
        Self {
            metadata: metadata.unwrap_or_default(),
        }
    }
}

/// Visits an object's members until `metadata`, reads it, and stops.
struct MetadataOnly<'a> {
    found: &'a mut Option<HeadMetadata>,
}

impl<'de> serde::de::Visitor<'de> for MetadataOnly<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "metadata" {
                let metadata: Option<HeadMetadata> = map.next_value()?;
                *self.found = Some(metadata.unwrap_or_default());
                return Err(serde::de::Error::custom("stop: metadata is read"));
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }
}

fn read_typed<K: Resource + DeserializeOwned>(json: &Value, member: &str) -> Result<K, Error> {
    K::deserialize(json).map_err(|e| {
        Error::new(format!(
            "cannot read `{member}` as {} {}: {e}",
            K::API_VERSION,
            K::KIND
        ))
    })
}

/// `value` in double quotes, cut to 40 characters, for messages that echo user input.
pub(crate) fn quote_short(value: &str) -> String {
    const MAX: usize = 40;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn head(object: Value) -> HeadMetadata {
        Head::read(&object.to_string()).metadata
    }

    #[test]
    fn the_head_is_read_wherever_metadata_is_and_whatever_follows() {
        let metadata = json!({"name": "web", "annotations": {"a": "1", "b": 2}});
        for object in [
            json!({"apiVersion": "apps/v1", "metadata": metadata, "spec": {"x": [1, {"y": null}]}}),
            json!({"spec": {"metadata": {"name": "inner"}}, "metadata": metadata}),
            // What follows metadata is not read at all.
            json!({"metadata": metadata, "spec": "ignored"}),
        ] {
            let head = head(object);
            assert_eq!(head.name.as_deref(), Some("web"));
            assert_eq!(head.annotations["a"], "1");
            assert_eq!(head.annotations["b"], 2);
        }
    }

    #[test]
    fn the_old_object_is_read_into_a_view_on_update_only() {
        use k8s_openapi::api::apps::v1::StatefulSet;
        #[derive(Deserialize)]
        struct Replicas {
            spec: Spec,
        }
        #[derive(Deserialize)]
        struct Spec {
            replicas: i32,
        }
        let request = |old: Value| {
            let wire: Wire = serde_json::from_value(json!({
                "kind": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
                "operation": "UPDATE",
                "oldObject": old,
            }))
            .unwrap();
            Request::<StatefulSet>::from_wire(wire, r#"{"spec":{"replicas":3}}"#.into())
                .unwrap()
                .unwrap()
        };
        let update = request(json!({"spec": {"replicas": 2}}));
        let old = update.old_object_view::<Replicas>().unwrap().unwrap();
        assert_eq!(old.spec.replicas, 2);
        assert!(
            request(Value::Null)
                .old_object_view::<Replicas>()
                .unwrap()
                .is_none()
        );
        let error = request(json!({"spec": {"replicas": "two"}}))
            .old_object_view::<Replicas>()
            .err()
            .unwrap();
        assert!(
            error.to_string().starts_with("cannot read `oldObject`"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_null_or_malformed_head_is_empty() {
        for object in [
            json!({"spec": {}}),
            json!({"metadata": null}),
            json!({"metadata": {"annotations": ["not", "a", "map"]}}),
            json!({"metadata": "text"}),
        ] {
            let head = head(object.clone());
            assert!(
                head.name.is_none() && head.annotations.is_empty(),
                "{object}"
            );
        }
    }
}
