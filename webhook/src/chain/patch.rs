//! The review's JSON Patch (RFC 6902): how the object the API server sent
//! differs from the object the policies left, compared only where they set
//! values.
//!
//! `json_patch::diff` walks both objects whole, keeping a JSON pointer to every
//! member it visits: for the lab StatefulSet that was ~104,000 instructions of
//! the ~580,000 a one-policy review costs (callgrind, README "Performance"), to
//! find the two probes a policy said it set. A policy's change is applied by
//! the contract's mutation step, which changes nothing outside the places its
//! verdict names (a value at a pointer, with the objects created on the way to
//! it; or the whole object). So [`Changes`] records those places, and
//! [`Changes::diff`] compares only them: everywhere else the two objects are
//! the same values, where the whole diff would find nothing either. Below a
//! place that was set, and wherever the two objects' shapes differ (an array
//! that changed length, a value that became an object), it hands over to
//! `json_patch::diff`. The patch is the one the whole diff gives, operation for
//! operation (a test checks that on generated objects and mutations).
//!
//! Recording more places than changed costs a comparison, never correctness: a
//! verdict that fails half-way is rolled back, and its places are compared and
//! found equal.

use std::collections::BTreeMap;

use json_patch::jsonptr::{Pointer, PointerBuf};
use json_patch::{Patch, PatchOperation};
use serde_json::Value;
use stsguard_contract::{Mutation, mutation};

/// The places in an object where the chain may have changed it.
#[derive(Debug)]
pub(crate) struct Changes(Place);

/// One place in the object, and what may have changed there.
#[derive(Debug)]
enum Place {
    /// A value was set here (or the whole object replaced): compare all of it.
    Whole,
    /// Values were set below these members (objects) or elements (arrays), by
    /// their pointer tokens; nothing else here changed.
    Within(BTreeMap<String, Place>),
}

impl Default for Changes {
    /// Nothing changed.
    fn default() -> Self {
        Self(Place::Within(BTreeMap::new()))
    }
}

impl Changes {
    /// Notes the places a verdict's mutation sets, before it is applied.
    pub(crate) fn record(&mut self, mutation: Option<&Mutation>) {
        match mutation {
            None => {}
            Some(Mutation::Object(_)) => self.0 = Place::Whole,
            Some(Mutation::Set(fields)) => {
                for field in fields {
                    self.record_pointer(&field.pointer);
                }
            }
        }
    }

    fn record_pointer(&mut self, pointer: &str) {
        // A pointer that does not parse is refused by the mutation step, which
        // changes nothing; comparing everything is the safe reading anyway.
        let Ok(pointer) = Pointer::parse(pointer) else {
            self.0 = Place::Whole;
            return;
        };
        let mut place = &mut self.0;
        for token in pointer.tokens() {
            place = match place {
                Place::Whole => return,
                Place::Within(below) => below
                    .entry(token.decoded().into_owned())
                    .or_insert_with(|| Place::Within(BTreeMap::new())),
            };
        }
        *place = Place::Whole;
    }

    /// The patch that turns `original` into `changed`, where `changed` is
    /// `original` with changes only at the recorded places.
    pub(crate) fn diff(&self, original: &Value, changed: &Value) -> Patch {
        let mut patch = Patch::default();
        diff_place(
            &self.0,
            original,
            changed,
            &mut PointerBuf::new(),
            &mut patch,
        );
        patch
    }
}

fn diff_place(place: &Place, left: &Value, right: &Value, at: &mut PointerBuf, patch: &mut Patch) {
    let Place::Within(below) = place else {
        return diff_whole(left, right, at, patch);
    };
    match (left, right) {
        (Value::Object(left_members), Value::Object(right_members)) => {
            // In the whole diff's order: additions and replacements by key, then
            // removals. Both iterate keys in `String` order: `below` is a
            // BTreeMap, and so is serde_json's map without its `preserve_order`
            // feature (which would make the whole diff follow insertion order;
            // the generated test below would catch it).
            for (key, place) in below {
                let Some(right_value) = right_members.get(key) else {
                    continue;
                };
                at.push_back(key);
                match left_members.get(key) {
                    Some(left_value) => diff_place(place, left_value, right_value, at, patch),
                    None => patch.0.push(PatchOperation::Add(json_patch::AddOperation {
                        path: at.clone(),
                        value: right_value.clone(),
                    })),
                }
                at.pop_back();
            }
            // A set never removes a member (only a place set whole can lose
            // some); this keeps the diff right for any recorded place all the same.
            for key in below.keys() {
                if left_members.contains_key(key) && !right_members.contains_key(key) {
                    at.push_back(key);
                    patch
                        .0
                        .push(PatchOperation::Remove(json_patch::RemoveOperation {
                            path: at.clone(),
                        }));
                    at.pop_back();
                }
            }
        }
        (Value::Array(left_items), Value::Array(right_items))
            if left_items.len() == right_items.len() =>
        {
            let mut elements = Vec::with_capacity(below.len());
            for (token, place) in below {
                match mutation::element_index(token).filter(|index| *index < right_items.len()) {
                    Some(index) => elements.push((index, place)),
                    // Not an element the mutation step could have set.
                    None => return diff_whole(left, right, at, patch),
                }
            }
            elements.sort_unstable_by_key(|(index, _)| *index);
            for (index, place) in elements {
                at.push_back(index);
                diff_place(place, &left_items[index], &right_items[index], at, patch);
                at.pop_back();
            }
        }
        // The shape changed here: an array's length, or a value that became an
        // object on the way to a new member.
        _ => diff_whole(left, right, at, patch),
    }
}

/// `json_patch::diff` of the values at `at`, its paths taken from there.
fn diff_whole(left: &Value, right: &Value, at: &PointerBuf, patch: &mut Patch) {
    let below = json_patch::diff(left, right);
    if at.is_root() {
        patch.0.extend(below.0);
        return;
    }
    patch.0.extend(below.0.into_iter().map(|mut operation| {
        match &mut operation {
            PatchOperation::Add(op) => op.path = at.concat(&op.path),
            PatchOperation::Remove(op) => op.path = at.concat(&op.path),
            PatchOperation::Replace(op) => op.path = at.concat(&op.path),
            PatchOperation::Test(op) => op.path = at.concat(&op.path),
            PatchOperation::Move(op) => {
                op.from = at.concat(&op.from);
                op.path = at.concat(&op.path);
            }
            PatchOperation::Copy(op) => {
                op.from = at.concat(&op.from);
                op.path = at.concat(&op.path);
            }
        }
        operation
    }));
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::json;
    use stsguard_contract::Field;

    use super::*;

    /// Applies `mutation` to `original` with the contract's step, and returns
    /// the recorded diff beside the whole one.
    fn both_diffs(original: &Value, mutations: &[Mutation]) -> (Patch, Patch, Value) {
        let mut changes = Changes::default();
        let mut object = Cow::Borrowed(original);
        for mutation in mutations {
            changes.record(Some(mutation));
            let _ = mutation::apply(&mut object, mutation.clone());
        }
        let changed = object.into_owned();
        (
            changes.diff(original, &changed),
            json_patch::diff(original, &changed),
            changed,
        )
    }

    fn set(fields: &[(&str, Value)]) -> Mutation {
        Mutation::Set(
            fields
                .iter()
                .map(|(pointer, value)| Field {
                    pointer: (*pointer).into(),
                    value: value.to_string(),
                })
                .collect(),
        )
    }

    fn statefulset() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": 3,
                "template": {"spec": {"containers": [
                    {"name": "app", "image": "counter:1", "ports": [{"containerPort": 8080}]},
                    {"name": "side", "image": "side:1"}
                ]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}}]
            }
        })
    }

    #[test]
    fn the_probes_a_policy_sets_are_the_patch() {
        let probe = json!({"httpGet": {"path": "/healthz", "port": 8080}});
        let (recorded, whole, _) = both_diffs(
            &statefulset(),
            &[set(&[
                (
                    "/spec/template/spec/containers/0/livenessProbe",
                    probe.clone(),
                ),
                (
                    "/spec/template/spec/containers/0/readinessProbe",
                    probe.clone(),
                ),
                ("/spec/podManagementPolicy", json!("Parallel")),
            ])],
        );
        assert_eq!(recorded, whole);
        assert_eq!(
            serde_json::to_value(&recorded).unwrap(),
            json!([
                {"op": "add", "path": "/spec/podManagementPolicy", "value": "Parallel"},
                {"op": "add", "path": "/spec/template/spec/containers/0/livenessProbe", "value": probe},
                {"op": "add", "path": "/spec/template/spec/containers/0/readinessProbe", "value": probe},
            ])
        );
    }

    #[test]
    fn created_parents_replaced_values_and_whole_objects_match_the_whole_diff() {
        let cases: Vec<Vec<Mutation>> = vec![
            // Members created on the way.
            vec![set(&[("/metadata/annotations/a~1b", json!("c"))])],
            // A null on the way becomes an object.
            vec![
                set(&[("/spec/selector", Value::Null)]),
                set(&[("/spec/selector/matchLabels/app", json!("web"))]),
            ],
            // A value replaced by another shape.
            vec![set(&[("/spec/replicas", json!({"odd": true}))])],
            // A set that changes nothing.
            vec![set(&[("/spec/replicas", json!(3))])],
            // An array set whole, shorter and longer.
            vec![set(&[(
                "/spec/template/spec/containers",
                json!([{"name": "app"}]),
            )])],
            vec![set(&[(
                "/spec/volumeClaimTemplates",
                json!([{"metadata": {"name": "data"}}, {"metadata": {"name": "logs"}}]),
            )])],
            // Deep inside an array element, then the element again.
            vec![
                set(&[("/spec/template/spec/containers/1/ports", json!([]))]),
                set(&[("/spec/template/spec/containers/1", json!({"name": "side"}))]),
            ],
            // The whole object, from the other form of mutation.
            vec![Mutation::Object(
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                       "metadata": {"name": "web", "namespace": "default"}, "spec": {}})
                .to_string(),
            )],
            // Refused mutations, rolled back: nothing to patch.
            vec![set(&[
                ("/metadata/labels/tier", json!("db")),
                ("/spec/template/spec/containers/7/image", json!("x")),
            ])],
            vec![set(&[("no-slash", json!(1))])],
            vec![set(&[("/metadata/name", json!("other"))])],
        ];
        for mutations in cases {
            let (recorded, whole, _) = both_diffs(&statefulset(), &mutations);
            assert_eq!(recorded, whole, "{mutations:?}");
        }
    }

    #[test]
    fn generated_objects_and_mutations_give_the_whole_diffs_patch() {
        // A small deterministic generator (xorshift): objects of objects,
        // arrays and scalars, and mutations at pointers into them, existing or
        // not.
        struct Random(u64);
        impl Random {
            fn next(&mut self, below: u64) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 % below
            }
            fn value(&mut self, depth: u32) -> Value {
                match self.next(if depth == 0 { 3 } else { 6 }) {
                    0 => Value::Null,
                    1 => json!(self.next(4)),
                    2 => json!(["a", "b", "c"][self.next(3) as usize]),
                    3 | 4 => Value::Object(
                        (0..self.next(4))
                            .map(|_| (self.key(), self.value(depth - 1)))
                            .collect(),
                    ),
                    _ => Value::Array((0..self.next(4)).map(|_| self.value(depth - 1)).collect()),
                }
            }
            /// Member names, some of which need escaping in a pointer.
            fn key(&mut self) -> String {
                ["k0", "k1", "k2", "a/b", "~", "~1", ""][self.next(7) as usize].to_string()
            }
            fn pointer(&mut self, object: &Value) -> String {
                if self.next(40) == 0 {
                    return String::new();
                }
                let mut pointer = String::new();
                let mut here = Some(object);
                loop {
                    let token = match here {
                        Some(Value::Array(items)) if !items.is_empty() && self.next(5) > 0 => {
                            // Now and then "-" or a leading zero, which no set accepts.
                            match self.next(12) {
                                0 => "-".to_string(),
                                1 => "00".to_string(),
                                _ => self.next(items.len() as u64 + 1).to_string(),
                            }
                        }
                        _ => self.key(),
                    };
                    here = here.and_then(|value| match value {
                        Value::Object(members) => members.get(&token),
                        Value::Array(items) => {
                            token.parse::<usize>().ok().and_then(|i| items.get(i))
                        }
                        _ => None,
                    });
                    pointer.push('/');
                    pointer.push_str(&token.replace('~', "~0").replace('/', "~1"));
                    if self.next(3) == 0 {
                        return pointer;
                    }
                }
            }
        }
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        let mut patches = 0;
        for _ in 0..3000 {
            let mut original =
                json!({"apiVersion": "v1", "kind": "Thing", "metadata": {"name": "n"}});
            for _ in 0..random.next(5) {
                let key = random.key();
                original[key] = random.value(4);
            }
            let mutations: Vec<Mutation> = (0..=random.next(3))
                .map(|_| {
                    if random.next(30) == 0 {
                        let mut whole = original.clone();
                        whole[random.key()] = random.value(3);
                        return Mutation::Object(whole.to_string());
                    }
                    let fields: Vec<(String, Value)> = (0..=random.next(3))
                        .map(|_| (random.pointer(&original), random.value(2)))
                        .collect();
                    Mutation::Set(
                        fields
                            .into_iter()
                            .map(|(pointer, value)| Field {
                                pointer,
                                value: value.to_string(),
                            })
                            .collect(),
                    )
                })
                .collect();
            let (recorded, whole, changed) = both_diffs(&original, &mutations);
            assert_eq!(recorded, whole, "{original} with {mutations:?}");
            let mut patched = original.clone();
            json_patch::patch(&mut patched, &recorded).unwrap();
            assert_eq!(patched, changed);
            patches += usize::from(!recorded.0.is_empty());
        }
        assert!(
            patches > 1000,
            "the generator mostly changes something: {patches}"
        );
    }
}
