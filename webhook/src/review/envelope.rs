//! Reading an AdmissionReview body in one pass, without building a JSON tree of
//! `request.oldObject`.
//!
//! The host routes on a few fields of the request and hands the rest to the
//! policies as text; it never looks inside the stored object of an UPDATE, which
//! is as large as the object itself. So `oldObject` is kept as the raw text the
//! API server sent (checked to be JSON, within the same recursion limit) and
//! written back verbatim when the policies' input is serialized.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A body as read: its top-level members other than `request`, and the request.
pub(super) enum Body {
    Object {
        members: Map<String, Value>,
        request: Option<Request>,
    },
    /// JSON that is not an object.
    NotAnObject,
}

/// The `request` member.
pub(super) enum Request {
    Object {
        /// Every member but `oldObject`.
        members: Map<String, Value>,
        /// `oldObject` as sent (a `null` too); `None` when absent.
        old_object: Option<Box<RawValue>>,
    },
    /// JSON that is not an object.
    NotAnObject,
}

/// serde_json's nesting limit for the JSON trees it builds. Raw text is skipped
/// without one, so `oldObject` is held to it here: the policies get nothing the
/// host would refuse as a tree.
const MAX_DEPTH: usize = 128;

/// Whether JSON `text` nests arrays and objects deeper than [`MAX_DEPTH`].
fn too_deep(text: &str) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

impl Body {
    pub(super) fn read(bytes: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(
            match SplitAround::new("request").deserialize(deserializer)? {
                Some(Split { members, member }) => Body::Object {
                    members,
                    request: member,
                },
                None => Body::NotAnObject,
            },
        )
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let split = SplitAround::<Box<RawValue>>::new("oldObject").deserialize(deserializer)?;
        let Some(Split {
            members,
            member: old_object,
        }) = split
        else {
            return Ok(Request::NotAnObject);
        };
        if old_object.as_ref().is_some_and(|text| too_deep(text.get())) {
            return Err(serde::de::Error::custom(format!(
                "recursion limit exceeded: oldObject nests deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Request::Object {
            members,
            old_object,
        })
    }
}

/// A JSON object split around one member: the others as JSON, that one as `T`.
struct Split<T> {
    members: Map<String, Value>,
    member: Option<T>,
}

/// Reads a JSON object as a [`Split`] around member `key`; JSON that is not an
/// object reads (an array is skipped) as `None`.
struct SplitAround<T> {
    key: &'static str,
    member: PhantomData<T>,
}

impl<T> SplitAround<T> {
    fn new(key: &'static str) -> Self {
        Self {
            key,
            member: PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for SplitAround<T> {
    type Value = Option<Split<T>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for SplitAround<T> {
    type Value = Option<Split<T>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Map::new();
        let mut member = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.key {
                member = Some(map.next_value()?);
            } else {
                members.insert(key, map.next_value()?);
            }
        }
        Ok(Some(Split { members, member }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        while items.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(value: Value) -> Body {
        Body::read(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_old_object_stays_text_and_the_rest_is_json() {
        let Body::Object { members, request } = read(json!({
            "apiVersion": "admission.k8s.io/v1",
            "request": {"uid": "u", "object": {"a": [1]}, "oldObject": {"b": {"c": null}}},
        })) else {
            panic!("an object");
        };
        assert_eq!(members["apiVersion"], "admission.k8s.io/v1");
        let Some(Request::Object {
            members,
            old_object,
        }) = request
        else {
            panic!("a request object");
        };
        assert_eq!(members["object"], json!({"a": [1]}));
        assert!(!members.contains_key("oldObject"));
        assert_eq!(old_object.unwrap().get(), r#"{"b":{"c":null}}"#);
    }

    #[test]
    fn a_null_old_object_is_kept_and_an_absent_one_is_absent() {
        for (request, expected) in [
            (json!({"oldObject": null}), Some("null")),
            (json!({"uid": "u"}), None),
        ] {
            let Body::Object {
                request: Some(Request::Object { old_object, .. }),
                ..
            } = read(json!({ "request": request }))
            else {
                panic!("a request object");
            };
            assert_eq!(old_object.as_deref().map(RawValue::get), expected);
        }
    }

    #[test]
    fn values_that_are_not_objects_are_named_as_such() {
        for body in [
            json!([1, [2]]),
            json!("x"),
            json!(1),
            json!(null),
            json!(true),
        ] {
            assert!(matches!(read(body), Body::NotAnObject));
        }
        for request in [json!([1]), json!("x"), json!(2.5), json!(null)] {
            let body = read(json!({ "request": request }));
            assert!(
                matches!(
                    body,
                    Body::Object {
                        request: Some(Request::NotAnObject),
                        ..
                    }
                ),
                "{request}"
            );
        }
    }

    #[test]
    fn an_old_object_too_deep_or_broken_is_an_error() {
        let nested = |depth: usize| {
            format!(
                r#"{{"request": {{"oldObject": {}"a[{{\"]"{}}}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        assert!(Body::read(nested(MAX_DEPTH - 2).as_bytes()).is_ok());
        let error = Body::read(nested(10_000).as_bytes()).err().unwrap();
        assert!(error.to_string().contains("recursion limit"), "{error}");
        assert!(Body::read(br#"{"request": {"oldObject": {"a": }}}"#).is_err());
    }

    #[test]
    fn brackets_inside_strings_do_not_count_as_nesting() {
        let text = format!(r#"["{}", "\"[[", {{"k": "]]]"}}]"#, "[".repeat(500));
        assert!(!too_deep(&text));
        assert!(too_deep(&"[".repeat(MAX_DEPTH + 1)));
        assert!(!too_deep(&format!(
            "{}{}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        )));
    }
}
