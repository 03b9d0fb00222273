//! JSON helpers for policies: building a value with the host's pointer rules
//! ([`set`]), and reading views the way k8s-openapi does ([`null_as_default`]).
//!
//! To change the object, return the values with
//! [`Verdict::set`](crate::Verdict::set); [`set`] is for building a value to
//! return that way (or for tests), by the same rules the host applies:
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

/// [`set`] with a value that is already JSON: the host's own rules
/// (`stsguard_contract::mutation::set`).
pub(crate) fn set_value(target: &mut Value, pointer: &str, value: Value) -> Result<(), Error> {
    stsguard_contract::mutation::set(target, pointer, value).map_err(|e| Error::new(e.to_string()))
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
                .contains("not an element of an array of 1")
        );
        assert!(
            set(&mut v, "/s/t", 2)
                .unwrap_err()
                .to_string()
                .contains("inside a value that is not an object")
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
