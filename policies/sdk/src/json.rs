//! Editing the object's JSON directly: the fastest way to mutate.
//!
//! [`Verdict::mutate`](crate::Verdict::mutate) re-serializes the typed object
//! twice to find what changed. When a policy knows exactly where its change goes,
//! it can instead clone [`Request::object_json`](crate::Request::object_json),
//! [`set`] the new values and return [`Verdict::mutate_json`](crate::Verdict::mutate_json):
//!
//! ```
//! # use stsguard_policy::serde_json::json;
//! let mut object = json!({"spec": {"replicas": 3}});
//! stsguard_policy::json::set(&mut object, "/spec/podManagementPolicy", "Parallel").unwrap();
//! assert_eq!(object, json!({"spec": {"replicas": 3, "podManagementPolicy": "Parallel"}}));
//! ```

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::Error;

/// Sets the value at `pointer` (RFC 6901, e.g. `/spec/template/spec/containers/0/readinessProbe`),
/// creating missing objects on the way. `value` may be any serializable value,
/// e.g. a typed k8s-openapi `Probe`. Array elements must exist. The host applies
/// [`Verdict::set`](crate::Verdict::set) values with the same rules.
pub fn set(target: &mut Value, pointer: &str, value: impl Serialize) -> Result<(), Error> {
    set_value(target, pointer, serde_json::to_value(value)?)
}

/// [`set`] with a value that is already JSON.
pub(crate) fn set_value(target: &mut Value, pointer: &str, value: Value) -> Result<(), Error> {
    let Some(tokens) = pointer.strip_prefix('/') else {
        return if pointer.is_empty() {
            *target = value;
            Ok(())
        } else {
            Err(Error::new(format!(
                "JSON pointer {pointer:?} must start with '/'"
            )))
        };
    };
    let mut tokens = tokens
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .peekable();
    let mut here = target;
    while let Some(token) = tokens.next() {
        let last = tokens.peek().is_none();
        if here.is_null() {
            *here = Value::Object(serde_json::Map::new());
        }
        here = match here {
            Value::Object(map) => {
                if last {
                    map.insert(token, value);
                    return Ok(());
                }
                map.entry(token).or_insert(Value::Null)
            }
            Value::Array(items) => {
                // RFC 6901 indexes, as the host reads them: digits, no leading zero.
                let canonical = token.bytes().all(|b| b.is_ascii_digit())
                    && (token == "0" || !token.starts_with('0'));
                let index = token
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| canonical && i < items.len())
                    .ok_or_else(|| Error::new(format!("{pointer}: no array element {token}")))?;
                if last {
                    items[index] = value;
                    return Ok(());
                }
                &mut items[index]
            }
            _ => return Err(Error::new(format!("{pointer}: {token} is inside a scalar"))),
        };
    }
    unreachable!("a pointer with '/' has at least one token")
}

/// A missing or `null` value as the type's default, the way k8s-openapi reads
/// required fields. For the small serde views policies read with
/// [`Request::object_view`](crate::Request::object_view):
/// `#[serde(default, deserialize_with = "stsguard_policy::json::null_as_default")]`.
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sets_creating_objects_and_indexing_arrays() {
        let mut v = json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}, "status": null});
        set(
            &mut v,
            "/spec/template/spec/containers/0/readinessProbe",
            json!({"tcpSocket": {"port": 80}}),
        )
        .unwrap();
        set(&mut v, "/metadata/annotations/a~1b", "x").unwrap();
        set(&mut v, "/status/replicas", 0).unwrap();
        assert_eq!(
            v,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "readinessProbe": {"tcpSocket": {"port": 80}}}]}}},
                   "metadata": {"annotations": {"a/b": "x"}}, "status": {"replicas": 0}})
        );
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let mut v = json!({"a": [1], "s": "x"});
        assert!(
            set(&mut v, "/a/1", 2)
                .unwrap_err()
                .to_string()
                .contains("no array element 1")
        );
        assert!(
            set(&mut v, "/s/t", 2)
                .unwrap_err()
                .to_string()
                .contains("inside a scalar")
        );
        assert!(set(&mut v, "a", 2).is_err());
        for index in ["00", "+0", "-", ""] {
            assert!(set(&mut v, &format!("/a/{index}"), 2).is_err(), "{index}");
        }
        set(&mut v, "/a/0", 2).unwrap();
        assert_eq!(v["a"], json!([2]));
        set(&mut v, "", json!(null)).unwrap();
        assert_eq!(v, Value::Null);
    }
}
