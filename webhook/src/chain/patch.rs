//! The review's JSON Patch (RFC 6902): how the object the API server sent
//! differs from the object the policies left, compared only where they set
//! values, without a copy of the object.
//!
//! `json_patch::diff` walks both objects whole, keeping a JSON pointer to every
//! member it visits: for the lab StatefulSet that was ~104,000 instructions of
//! the ~580,000 a one-policy review costs (callgrind, docs/performance.md), to
//! find the two probes a policy said it set. And it needs the object as it was
//! beside the object as it is: copying the StatefulSet before the first change
//! and dropping the copy afterwards was another ~38,000.
//!
//! A policy's change is applied by the contract's mutation step, which changes
//! nothing outside the places its verdict names: a value at a pointer, with the
//! objects it creates on the way (where a member is missing or `null`); or the
//! whole object. So [`Changes::apply`] applies each verdict to the chain's
//! object in place, after keeping what the object holds at those places, the
//! first time the chain touches each: a probe that was missing is kept as
//! "nothing here", a `podManagementPolicy` as its old string, a whole object
//! replaced as the object it replaced (moved, not copied). [`Changes::diff`]
//! compares, at those places only, what was kept with what is there now,
//! handing over to `json_patch::diff` for each. The patch is the one the whole
//! diff gives, operation for operation (a test checks that on generated objects
//! and mutations); [`Changes::restore`] puts the kept values back.
//!
//! Keeping more places than changed costs a small copy and a comparison, never
//! correctness: a verdict that fails half-way is rolled back, and its places
//! are compared and found equal. Monitor mode's would-be patch
//! ([`Changes::would_apply`]) is computed the same way on a scratch copy.

use std::borrow::Cow;
use std::collections::BTreeMap;

use json_patch::jsonptr::{Pointer, PointerBuf};
use json_patch::{Patch, PatchOperation};
use serde_json::Value;
use stsguard_contract::verdict::Applied;
use stsguard_contract::{Mutation, Verdict, VerdictError, mutation};

/// The places in an object where the chain may have changed it, and what the
/// object held there before.
#[derive(Debug)]
pub(crate) struct Changes(Place);

/// One place in the object, and what may have changed there.
#[derive(Debug)]
enum Place {
    /// A value was set here, or created here on the way to one (or the whole
    /// object replaced): compare all of it with what was here before, `None`
    /// when nothing was (a member the chain added).
    Whole(Option<Value>),
    /// Values were set below these members (objects) or elements (arrays), by
    /// their decoded pointer tokens; nothing else here changed.
    Within(BTreeMap<String, Place>),
}

impl Default for Changes {
    /// Nothing changed.
    fn default() -> Self {
        Self(Place::Within(BTreeMap::new()))
    }
}

impl Changes {
    /// Applies a policy's verdict (`mutating` as its metadata says) to the
    /// chain's `object`, in place, keeping first what the object holds at the
    /// places it sets. As [`Verdict::apply`]: on error `object` is as it was.
    pub(crate) fn apply(
        &mut self,
        verdict: Verdict,
        mutating: bool,
        object: &mut Value,
    ) -> Result<Applied, VerdictError> {
        // Otherwise the step changes nothing (or refuses): nothing to keep.
        let applies = verdict.allowed && mutating;
        match &verdict.mutation {
            Some(Mutation::Set(fields)) if applies => {
                for field in fields {
                    self.record_pointer(&field.pointer, object);
                }
                // Owned, the step changes the object in place: moved in and
                // out, never copied.
                let mut owned = Cow::Owned(std::mem::take(object));
                let applied = verdict.apply(mutating, &mut owned);
                *object = owned.into_owned();
                applied
            }
            Some(Mutation::Object(_)) if applies => {
                // Replaced whole: what to keep is the object it replaces, moved
                // rather than copied.
                let before = std::mem::take(object);
                let mut after = Cow::Borrowed(&before);
                let applied = verdict.apply(mutating, &mut after);
                match after {
                    Cow::Owned(after) => {
                        *object = after;
                        self.0.keep_replaced(before);
                    }
                    Cow::Borrowed(_) => *object = before,
                }
                applied
            }
            _ => verdict.apply(mutating, &mut Cow::Borrowed(object)),
        }
    }

    /// What applying `verdict` to `object` would do, for monitor mode: the
    /// applied verdict, and the patch when it would change the object.
    pub(crate) fn would_apply(
        verdict: Verdict,
        mutating: bool,
        object: &Value,
    ) -> Result<(Applied, Option<Patch>), VerdictError> {
        let mut changes = Self::default();
        let whole = matches!(verdict.mutation, Some(Mutation::Object(_)));
        if let (true, Some(Mutation::Set(fields))) =
            (verdict.allowed && mutating, &verdict.mutation)
        {
            for field in fields {
                changes.record_pointer(&field.pointer, object);
            }
        }
        // A scratch copy, made only once a value differs.
        let mut scratch = Cow::Borrowed(object);
        let applied = verdict.apply(mutating, &mut scratch)?;
        let patch = match scratch {
            Cow::Owned(after) if applied.changed && whole => Some(json_patch::diff(object, &after)),
            Cow::Owned(after) if applied.changed => Some(changes.diff(&after)),
            _ => None,
        };
        Ok((applied, patch))
    }

    fn record_pointer(&mut self, pointer: &str, object: &Value) {
        // A pointer that does not parse is refused by the mutation step (by
        // the same parser), and the whole verdict with it: nothing changes.
        let Ok(pointer) = Pointer::parse(pointer) else {
            return;
        };
        let mut place = &mut self.0;
        let mut here = Some(object);
        for token in pointer.tokens() {
            place = match place {
                // Kept whole above: what was there before is already kept.
                Place::Whole(_) => return,
                // Where the mutation step creates objects (a member missing or
                // `null` on the way) or fails (a scalar on the way), everything
                // below is new: keep what is here, whole.
                Place::Within(_) if !matches!(here, Some(Value::Object(_) | Value::Array(_))) => {
                    return place.keep_whole(here);
                }
                Place::Within(below) => {
                    let token = token.decoded();
                    here = here.and_then(|value| mutation::child(value, &token));
                    below
                        .entry(token.into_owned())
                        .or_insert_with(|| Place::Within(BTreeMap::new()))
                }
            };
        }
        place.keep_whole(here);
    }

    /// The patch that turns the object as it was into `changed`: the same
    /// object, changed only at the recorded places.
    pub(crate) fn diff(&self, changed: &Value) -> Patch {
        let mut patch = Patch::default();
        diff_place(&self.0, Some(changed), &mut PointerBuf::new(), &mut patch);
        patch
    }

    /// Puts back what `object` held at the recorded places: it becomes the
    /// object as it was before the first recorded mutation.
    pub(crate) fn restore(self, object: &mut Value) {
        match self.0 {
            Place::Whole(Some(original)) => *object = original,
            Place::Whole(None) => {}
            Place::Within(below) => put_back(below, object),
        }
    }
}

impl Place {
    /// The object at this place was replaced by another; `before` is the one
    /// replaced. What it held before the chain changed it: `before`, with what
    /// was kept below put back (unless kept whole already).
    fn keep_replaced(&mut self, mut before: Value) {
        if let Self::Within(below) = self {
            put_back(std::mem::take(below), &mut before);
            *self = Self::Whole(Some(before));
        }
    }

    /// This place is about to change whole; `now` is what it holds (`None`:
    /// nothing). What it held before the chain changed it: `now`, with what was
    /// kept below put back.
    fn keep_whole(&mut self, now: Option<&Value>) {
        if let Self::Within(below) = self {
            let below = std::mem::take(below);
            *self = Self::Whole(now.cloned().map(|mut before| {
                put_back(below, &mut before);
                before
            }));
        }
    }
}

/// Puts what was kept below a place into `target`, the value there now.
fn put_back(below: BTreeMap<String, Place>, target: &mut Value) {
    for (token, place) in below {
        match (&mut *target, place) {
            (Value::Object(members), Place::Whole(Some(kept))) => {
                members.insert(token, kept);
            }
            (Value::Object(members), Place::Whole(None)) => {
                members.remove(&token);
            }
            (Value::Object(members), Place::Within(deeper)) => {
                if let Some(member) = members.get_mut(&token) {
                    put_back(deeper, member);
                }
            }
            (Value::Array(items), place) => {
                // An element is never added or removed below a place not kept
                // whole: a set that named one out of range failed.
                let Some(item) = mutation::element_index(&token).and_then(|i| items.get_mut(i))
                else {
                    continue;
                };
                match place {
                    Place::Whole(Some(kept)) => *item = kept,
                    Place::Whole(None) => {}
                    Place::Within(deeper) => put_back(deeper, item),
                }
            }
            // The shape changes only at a place kept whole.
            _ => {}
        }
    }
}

fn diff_place(place: &Place, right: Option<&Value>, at: &mut PointerBuf, patch: &mut Patch) {
    let below = match place {
        Place::Whole(before) => return diff_kept(before.as_ref(), right, at, patch),
        Place::Within(below) => below,
    };
    match right {
        Some(Value::Object(members)) => {
            // In the whole diff's order: additions and replacements by key, then
            // removals. Both iterate keys in `String` order: `below` is a
            // BTreeMap, and so is serde_json's map without its `preserve_order`
            // feature (which would make the whole diff follow insertion order;
            // the generated test below would catch it).
            let removed = |place: &Place, key: &String| {
                matches!(place, Place::Whole(Some(_))) && !members.contains_key(key)
            };
            for (key, place) in below {
                if !removed(place, key) {
                    at.push_back(key);
                    diff_place(place, members.get(key), at, patch);
                    at.pop_back();
                }
            }
            for (key, place) in below {
                if removed(place, key) {
                    at.push_back(key);
                    diff_place(place, None, at, patch);
                    at.pop_back();
                }
            }
        }
        Some(Value::Array(items)) => {
            // Tokens that name no element belong to sets that failed.
            let mut elements: Vec<_> = below
                .iter()
                .filter_map(|(token, place)| {
                    let index = mutation::element_index(token).filter(|i| *i < items.len())?;
                    Some((index, place))
                })
                .collect();
            elements.sort_unstable_by_key(|(index, _)| *index);
            for (index, place) in elements {
                at.push_back(index);
                diff_place(place, Some(&items[index]), at, patch);
                at.pop_back();
            }
        }
        // The shape changes only at a place kept whole.
        _ => {}
    }
}

/// The operations from what was kept at `at` to what is there now.
fn diff_kept(before: Option<&Value>, now: Option<&Value>, at: &PointerBuf, patch: &mut Patch) {
    match (before, now) {
        (Some(before), Some(now)) => diff_whole(before, now, at, patch),
        (None, Some(now)) => patch.0.push(PatchOperation::Add(json_patch::AddOperation {
            path: at.clone(),
            value: now.clone(),
        })),
        (Some(_), None) => patch
            .0
            .push(PatchOperation::Remove(json_patch::RemoveOperation {
                path: at.clone(),
            })),
        (None, None) => {}
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

    use serde_json::json;
    use stsguard_contract::Field;

    use super::*;

    /// Applies `mutations` to a copy of `original` as the chain does, and
    /// returns the recorded diff beside the whole one. Checks on the way that
    /// monitor mode's patch of each verdict is the whole diff of that step, and
    /// at the end that what was kept puts the original back.
    fn both_diffs(original: &Value, mutations: &[Mutation]) -> (Patch, Patch, Value) {
        let verdict = |mutation: &Mutation| Verdict {
            allowed: true,
            message: None,
            warnings: Vec::new(),
            mutation: Some(mutation.clone()),
        };
        let mut changes = Changes::default();
        let mut object = original.clone();
        for mutation in mutations {
            let would = Changes::would_apply(verdict(mutation), true, &object);
            let before = object.clone();
            let applied = changes.apply(verdict(mutation), true, &mut object);
            assert_eq!(applied.is_ok(), would.is_ok(), "{mutation:?}");
            let would_patch = would.ok().and_then(|(_, patch)| patch).unwrap_or_default();
            assert_eq!(
                would_patch,
                json_patch::diff(&before, &object),
                "monitor mode's patch of {mutation:?} on {before}"
            );
        }
        let recorded = changes.diff(&object);
        let mut restored = object.clone();
        changes.restore(&mut restored);
        assert_eq!(&restored, original, "put back after {mutations:?}");
        (recorded, json_patch::diff(original, &object), object)
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
