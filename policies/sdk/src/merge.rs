//! Carrying a policy's typed edits back into the JSON the API server sent.
//!
//! `base` is the typed object as the SDK read it, serialized again; `edited` is
//! the typed object the policy returned, serialized. Both lack whatever the
//! typed structs do not model (newer fields, explicit `null`s), so returning
//! `edited` would make the host's diff remove those. Instead, only where `base`
//! and `edited` differ is `raw` changed:
//!
//! ```text
//!   raw ─── typed read ──► base ── policy edits ──► edited
//!    │                        └──── difference ────┘
//!    └──────────── apply the difference ─────────────► result
//! ```
//!
//! Objects are merged key by key. Array elements are merged with the element
//! they came from: by position when the list kept its length and names;
//! otherwise an unchanged element (by equality), else one with the same `name`,
//! else — for unnamed elements of a list that kept its length — the one at the
//! same position. An element that came from nowhere is taken from `edited`.

use serde_json::Value;

/// Applies the difference between `base` and `edited` to `raw`.
pub(crate) fn apply_typed_edits(raw: &mut Value, base: &Value, edited: &Value) {
    if base == edited {
        return;
    }
    match (raw, base, edited) {
        (Value::Object(raw), Value::Object(base), Value::Object(edited)) => {
            for (key, edited_value) in edited {
                match (base.get(key), raw.get_mut(key)) {
                    (Some(base_value), Some(raw_value)) => {
                        apply_typed_edits(raw_value, base_value, edited_value);
                    }
                    _ => {
                        raw.insert(key.clone(), edited_value.clone());
                    }
                }
            }
            for key in base.keys() {
                if !edited.contains_key(key) {
                    raw.remove(key);
                }
            }
        }
        (Value::Array(raw), Value::Array(base), Value::Array(edited))
            if raw.len() == base.len() =>
        {
            let same_shape = base.len() == edited.len()
                && base
                    .iter()
                    .zip(edited)
                    .all(|(b, e)| identity(b) == identity(e));
            if same_shape {
                for ((raw, base), edited) in raw.iter_mut().zip(base).zip(edited) {
                    apply_typed_edits(raw, base, edited);
                }
            } else {
                let pairs = pair_elements(base, edited);
                let mut old: Vec<Option<Value>> =
                    std::mem::take(raw).into_iter().map(Some).collect();
                for (edited_value, pair) in edited.iter().zip(pairs) {
                    match pair {
                        Some(i) => {
                            let mut raw_value = old[i].take().expect("each element is paired once");
                            apply_typed_edits(&mut raw_value, &base[i], edited_value);
                            raw.push(raw_value);
                        }
                        None => raw.push(edited_value.clone()),
                    }
                }
            }
        }
        (raw, _, edited) => *raw = edited.clone(),
    }
}

/// The `name` of a list element, the merge key of most Kubernetes lists
/// (containers, ports, volumes, env).
fn identity(value: &Value) -> Option<&str> {
    value.get("name")?.as_str()
}

/// For each edited element, the base element it came from, if any: first an
/// unchanged element (equal, in order), then one with the same `name`, then —
/// for unnamed elements of a list that kept its length — the one at the same
/// position.
fn pair_elements(base: &[Value], edited: &[Value]) -> Vec<Option<usize>> {
    let mut taken = vec![false; base.len()];
    let mut pairs = vec![None; edited.len()];
    let mut next = 0;
    for (pair, edited_value) in pairs.iter_mut().zip(edited) {
        if let Some(i) = (next..base.len()).find(|&i| base[i] == *edited_value) {
            *pair = Some(i);
            taken[i] = true;
            next = i + 1;
        }
    }
    for (j, edited_value) in edited.iter().enumerate() {
        if pairs[j].is_some() {
            continue;
        }
        let by_name = identity(edited_value).and_then(|name| {
            (0..base.len()).find(|&i| !taken[i] && identity(&base[i]) == Some(name))
        });
        let by_position = (base.len() == edited.len()
            && !taken[j]
            && identity(&base[j]).is_none()
            && identity(edited_value).is_none())
        .then_some(j);
        if let Some(i) = by_name.or(by_position) {
            pairs[j] = Some(i);
            taken[i] = true;
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn merged(raw: Value, base: Value, edited: Value) -> Value {
        let mut raw = raw;
        apply_typed_edits(&mut raw, &base, &edited);
        raw
    }

    #[test]
    fn unknown_fields_and_nulls_survive_an_edit_next_to_them() {
        let raw = json!({"metadata": {"creationTimestamp": null, "name": "web"},
                         "spec": {"replicas": 3, "futureField": {"a": 1}}});
        let base = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let edited = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3, "podManagementPolicy": "Parallel"}});
        assert_eq!(
            merged(raw, base, edited),
            json!({"metadata": {"creationTimestamp": null, "name": "web"},
                   "spec": {"replicas": 3, "futureField": {"a": 1}, "podManagementPolicy": "Parallel"}})
        );
    }

    #[test]
    fn a_field_the_policy_removed_is_removed() {
        let raw = json!({"spec": {"minReadySeconds": 5, "x-new": true}});
        let base = json!({"spec": {"minReadySeconds": 5}});
        let edited = json!({"spec": {}});
        assert_eq!(merged(raw, base, edited), json!({"spec": {"x-new": true}}));
    }

    #[test]
    fn array_elements_keep_their_unknown_fields_when_edited_in_place() {
        let raw = json!({"containers": [{"name": "a", "future": 1}, {"name": "b", "future": 2}]});
        let base = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let edited = json!({"containers": [{"name": "a", "readinessProbe": {}}, {"name": "b"}]});
        assert_eq!(
            merged(raw, base, edited),
            json!({"containers": [{"name": "a", "future": 1, "readinessProbe": {}}, {"name": "b", "future": 2}]})
        );
    }

    #[test]
    fn appended_and_removed_elements_leave_the_others_intact() {
        let raw = json!([{"name": "a", "future": 1}, {"name": "b", "future": 2}, {"name": "c", "future": 3}]);
        let base = json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]);
        let edited = json!([{"name": "a"}, {"name": "c"}, {"name": "d"}]);
        assert_eq!(
            merged(raw.clone(), base.clone(), edited),
            json!([{"name": "a", "future": 1}, {"name": "c", "future": 3}, {"name": "d"}])
        );
        // Removing one element and editing another pairs them by name.
        let edited = json!([{"name": "b", "x": 1}, {"name": "c"}]);
        assert_eq!(
            merged(raw.clone(), base.clone(), edited),
            json!([{"name": "b", "future": 2, "x": 1}, {"name": "c", "future": 3}])
        );
        // Appending while editing in place.
        let edited = json!([{"name": "a", "x": 1}, {"name": "b"}, {"name": "c"}, {"name": "d"}]);
        assert_eq!(
            merged(raw, base, edited),
            json!([{"name": "a", "future": 1, "x": 1}, {"name": "b", "future": 2}, {"name": "c", "future": 3}, {"name": "d"}])
        );
    }

    #[test]
    fn unnamed_elements_of_a_list_that_kept_its_length_merge_by_position() {
        let raw = json!([{"port": 1, "future": 1}, {"port": 2, "future": 2}]);
        let base = json!([{"port": 1}, {"port": 2}]);
        let edited = json!([{"port": 10}, {"port": 2}]);
        assert_eq!(
            merged(raw, base, edited),
            json!([{"port": 10, "future": 1}, {"port": 2, "future": 2}])
        );
    }

    #[test]
    fn a_replaced_scalar_or_type_is_taken_from_the_edit() {
        assert_eq!(
            merged(
                json!({"p": "OrderedReady"}),
                json!({"p": "OrderedReady"}),
                json!({"p": "Parallel"})
            ),
            json!({"p": "Parallel"})
        );
        assert_eq!(
            merged(
                json!({"port": 8080}),
                json!({"port": 8080}),
                json!({"port": "http"})
            ),
            json!({"port": "http"})
        );
    }

    #[test]
    fn no_edit_changes_nothing() {
        let raw = json!({"a": null, "b": [1, 2], "c": {"future": true}});
        let base = json!({"b": [1, 2], "c": {}});
        assert_eq!(merged(raw.clone(), base.clone(), base), raw);
    }
}
