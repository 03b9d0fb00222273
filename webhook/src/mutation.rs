//! Applying a policy's mutation to the object the chain is working on.
//!
//! A policy says how it changes the object in one of two ways (WIT `mutation`):
//! the whole object, or values to set at JSON pointers. Values are the fast way —
//! the guest serializes two probes instead of the whole StatefulSet, and the host
//! parses two probes instead of the whole object again — so the SDK uses them.
//! Either way the host never takes a patch from a policy: it applies the change
//! to its own copy, checks that the object is still the same object, and computes
//! the one patch for the whole chain at the end.
//!
//! Nothing is applied unless everything is valid: values are parsed and the
//! edits applied to a copy, so a bad pointer in a policy's third value leaves the
//! object as the previous policy left it.

use serde_json::Value;

use crate::engine::{EvalError, Field, Mutation};

/// The fields that make an object the object it is.
const IDENTITY: [&str; 4] = [
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/namespace",
];

/// The object after `mutation`, or `None` when it changes nothing.
pub fn apply(current: &Value, mutation: Mutation) -> Result<Option<Value>, EvalError> {
    let next = match mutation {
        Mutation::Object(text) => {
            let object: Value = serde_json::from_str(&text).map_err(|e| {
                EvalError::Policy(format!("returned a mutated object that is not JSON: {e}"))
            })?;
            (object != *current).then_some(object)
        }
        Mutation::Set(fields) => set_all(current, fields)?,
    };
    if let Some(next) = &next {
        check_identity(current, next)?;
    }
    Ok(next)
}

/// Applies each field in order; values already in place are skipped, and the
/// object is copied only once one is not.
fn set_all(current: &Value, fields: Vec<Field>) -> Result<Option<Value>, EvalError> {
    let mut next: Option<Value> = None;
    for Field { pointer, value } in fields {
        let value: Value = serde_json::from_str(&value).map_err(|e| {
            EvalError::Policy(format!("set {pointer:?} to a value that is not JSON: {e}"))
        })?;
        let here = next.as_ref().unwrap_or(current);
        if here.pointer(&pointer) == Some(&value) {
            continue;
        }
        let object = next.get_or_insert_with(|| current.clone());
        set(object, &pointer, value)
            .map_err(|reason| EvalError::Policy(format!("set {pointer:?}: {reason}")))?;
    }
    Ok(next)
}

/// Sets the value at an RFC 6901 pointer, creating objects that are missing or
/// `null` on the way. Array elements must exist: a policy that wants to append
/// returns the whole array.
pub fn set(target: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    if pointer.is_empty() {
        *target = value;
        return Ok(());
    }
    let Some(tokens) = pointer.strip_prefix('/') else {
        return Err("a JSON pointer starts with '/'".into());
    };
    let mut tokens = tokens.split('/').peekable();
    let mut here = target;
    while let Some(raw) = tokens.next() {
        let token = unescape(raw);
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
                let index = array_index(&token, items.len())?;
                if last {
                    items[index] = value;
                    return Ok(());
                }
                &mut items[index]
            }
            _ => return Err(format!("{token:?} is inside a value that is not an object")),
        };
    }
    unreachable!("a pointer that starts with '/' has at least one token")
}

fn unescape(token: &str) -> String {
    if token.contains('~') {
        token.replace("~1", "/").replace("~0", "~")
    } else {
        token.to_owned()
    }
}

/// RFC 6901 array indexes: decimal digits, no leading zero, and here also an
/// element that exists.
fn array_index(token: &str, len: usize) -> Result<usize, String> {
    let canonical = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    match token.parse::<usize>() {
        Ok(index) if canonical && index < len => Ok(index),
        _ => Err(format!(
            "{token:?} is not an element of an array of {len}; set existing elements, or \
             the whole array"
        )),
    }
}

/// A policy may change an object, not swap it for another one.
fn check_identity(before: &Value, after: &Value) -> Result<(), EvalError> {
    if !after.is_object() {
        return Err(EvalError::Policy(
            "returned a mutated object that is not a JSON object".into(),
        ));
    }
    for pointer in IDENTITY {
        if before.pointer(pointer) != after.pointer(pointer) {
            return Err(EvalError::Policy(format!(
                "changed the object's {}; policies may not change an object's identity",
                &pointer[1..]
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "lab", "labels": null},
            "spec": {"template": {"spec": {"containers": [{"name": "app"}]}}},
        })
    }

    fn field(pointer: &str, value: Value) -> Field {
        Field {
            pointer: pointer.into(),
            value: value.to_string(),
        }
    }

    fn set_fields(fields: Vec<Field>) -> Result<Option<Value>, EvalError> {
        apply(&object(), Mutation::Set(fields))
    }

    #[test]
    fn sets_values_in_order_creating_objects_on_the_way() {
        let next = set_fields(vec![
            field(
                "/spec/template/spec/containers/0/readinessProbe",
                json!({"tcpSocket": {"port": 80}}),
            ),
            field("/metadata/labels/app.kubernetes.io~1name", json!("web")),
            field("/metadata/annotations/a~0b", json!("1")),
            field("/spec/podManagementPolicy", json!("OrderedReady")),
            field("/spec/podManagementPolicy", json!("Parallel")),
        ])
        .unwrap()
        .unwrap();
        let mut expected = object();
        expected["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] =
            json!({"tcpSocket": {"port": 80}});
        expected["metadata"]["labels"] = json!({"app.kubernetes.io/name": "web"});
        expected["metadata"]["annotations"] = json!({"a~b": "1"});
        expected["spec"]["podManagementPolicy"] = json!("Parallel");
        assert_eq!(next, expected);
    }

    #[test]
    fn values_already_in_place_change_nothing() {
        assert_eq!(
            set_fields(vec![field("/metadata/name", json!("web"))]).unwrap(),
            None
        );
        assert_eq!(set_fields(vec![]).unwrap(), None);
        assert_eq!(
            apply(&object(), Mutation::Object(object().to_string())).unwrap(),
            None
        );
    }

    #[test]
    fn bad_edits_fail_naming_the_pointer() {
        let cases = [
            (field("spec", json!(1)), "starts with '/'"),
            (field("/kind/x", json!(1)), "not an object"),
            (
                field("/spec/template/spec/containers/1/name", json!("x")),
                "not an element of an array of 1",
            ),
            (
                field("/spec/template/spec/containers/-", json!({})),
                "not an element",
            ),
            (
                field("/spec/template/spec/containers/00/name", json!("x")),
                "not an element",
            ),
            (
                field("/spec/template/spec/containers/+0/name", json!("x")),
                "not an element",
            ),
        ];
        for (field, expected) in cases {
            let pointer = field.pointer.clone();
            let error = set_fields(vec![field]).unwrap_err().to_string();
            assert!(
                error.contains(expected) && error.contains(&pointer),
                "{pointer}: {error}"
            );
        }
        let not_json = Field {
            pointer: "/spec/replicas".into(),
            value: "{3".into(),
        };
        let error = set_fields(vec![not_json]).unwrap_err().to_string();
        assert!(error.contains("not JSON"), "{error}");
    }

    #[test]
    fn identity_may_not_change() {
        for (pointer, value) in [
            ("/metadata/name", json!("other")),
            ("/metadata/namespace", json!("kube-system")),
            ("/kind", json!("Deployment")),
            ("/apiVersion", json!("apps/v1beta1")),
            ("/metadata", json!({"name": "web"})),
        ] {
            let error = set_fields(vec![field(pointer, value)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("identity"), "{pointer}: {error}");
        }
        let error = set_fields(vec![field("", json!([1]))])
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a JSON object"), "{error}");
        let renamed = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                             "metadata": {"name": "x", "namespace": "lab"}});
        let error = apply(&object(), Mutation::Object(renamed.to_string()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("metadata/name"), "{error}");
        let error = apply(&object(), Mutation::Object("{".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not JSON"), "{error}");
    }

    #[test]
    fn the_whole_object_may_be_replaced_by_the_same_object_edited() {
        let mut edited = object();
        edited["spec"]["replicas"] = json!(3);
        let next = set_fields(vec![field("", edited.clone())]).unwrap();
        assert_eq!(next, Some(edited));
    }
}
