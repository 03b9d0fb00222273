//! What a policy decides: accept, reject with a message, or mutate — each with
//! warnings that explain it.

use serde::Serialize;
use serde_json::Value;

use stsguard_contract::{self as contract, Field, Mutation};

use crate::merge::apply_typed_edits;
use crate::{Error, Request, json};

/// The longest warning the host sends, its `stsguard/<policy>: ` prefix
/// included, in characters: longer ones are cut with `…` (Kubernetes itself
/// cuts warnings at 256 characters once they add up to more than 4096).
pub use stsguard_contract::text::MAX_WARNING_CHARS;

/// A policy's answer about one request.
///
/// ```
/// # use stsguard_policy::Verdict;
/// # let sts = stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet::default();
/// let _ = Verdict::<()>::accept();
/// let _ = Verdict::<()>::reject("volumeClaimTemplate `data` has no storage request; add spec.resources.requests.storage");
/// let _ = Verdict::mutate(sts).warn("set spec.podManagementPolicy to Parallel");
/// ```
#[derive(Debug, Clone)]
#[must_use = "a verdict does nothing unless it is returned"]
pub struct Verdict<K> {
    decision: Decision<K>,
    warnings: Vec<String>,
}

#[derive(Debug, Clone)]
enum Decision<K> {
    Accept,
    Reject(String),
    Mutate(K),
    MutateJson(Value),
    /// `(pointer, value as JSON text)`, applied in order by the host to the
    /// object as sent (WIT `mutation::set`).
    Set(Vec<(String, String)>),
}

impl<K> Verdict<K> {
    /// Allow the request unchanged.
    pub fn accept() -> Self {
        Self::with(Decision::Accept)
    }

    /// Deny the request. The message reaches the user as `policy <name> denied
    /// StatefulSet <ns>/<name>: <message>`: say what is wrong and how to fix it.
    pub fn reject(message: impl Into<String>) -> Self {
        Self::with(Decision::Reject(message.into()))
    }

    /// Allow the request with the object changed to `object`: a clone of
    /// [`Request::object`] with your edits. Only the fields you changed are
    /// changed in the user's object; if you changed nothing, no patch is sent.
    pub fn mutate(object: K) -> Self {
        Self::with(Decision::Mutate(object))
    }

    /// Allow the request with the object replaced by this JSON: for edits the
    /// typed view cannot express. Start from a clone of
    /// [`Request::object_json`] so no field is lost.
    pub fn mutate_json(object: Value) -> Self {
        Self::with(Decision::MutateJson(object))
    }

    /// Allow the request with the value at `pointer` (RFC 6901, e.g.
    /// `/spec/podManagementPolicy`) set to `value`; objects missing on the way are
    /// created, array elements must exist. Call it again for more values; they
    /// apply in order. Only the values travel to the host, which sets them in its
    /// copy of the object: neither side copies or re-serializes the whole object,
    /// so this is the fastest way to mutate. Values already in place change
    /// nothing, and if none changes anything no patch is sent.
    ///
    /// Applies to an accepting verdict or one from [`Verdict::mutate_json`]
    /// (whose object is then edited); on any other the result is an `Err`.
    ///
    /// ```
    /// # use stsguard_policy::Verdict;
    /// let v = Verdict::<()>::accept().set("/spec/podManagementPolicy", "Parallel").unwrap();
    /// # let _ = v;
    /// ```
    pub fn set(mut self, pointer: impl Into<String>, value: impl Serialize) -> Result<Self, Error> {
        let pointer = pointer.into();
        match &mut self.decision {
            Decision::Accept => {
                self.decision = Decision::Set(vec![(pointer, serde_json::to_string(&value)?)]);
            }
            Decision::Set(values) => values.push((pointer, serde_json::to_string(&value)?)),
            Decision::MutateJson(object) => {
                json::set_value(object, &pointer, serde_json::to_value(value)?)?;
            }
            Decision::Reject(_) | Decision::Mutate(_) => {
                return Err(Error::new(format!(
                    "Verdict::set({pointer:?}) on a verdict that rejects or mutates the typed \
                     object"
                )));
            }
        }
        Ok(self)
    }

    /// Adds a warning, shown by kubectl. Keep it to one short line: the host
    /// sends it as one line (newlines become spaces), prefixed with
    /// `stsguard/<policy>: ` and cut to [`MAX_WARNING_CHARS`] in all, once (a
    /// repeated warning is sent once). The [`testing`](crate::testing) harness
    /// shows them exactly as the host sends them.
    pub fn warn(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// Adds several warnings; see [`Verdict::warn`].
    pub fn warn_all<W: Into<String>>(mut self, warnings: impl IntoIterator<Item = W>) -> Self {
        self.warnings.extend(warnings.into_iter().map(Into::into));
        self
    }

    /// Whether the verdict denies the request.
    pub fn is_rejected(&self) -> bool {
        matches!(self.decision, Decision::Reject(_))
    }

    /// The warnings so far.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn with(decision: Decision<K>) -> Self {
        Self {
            decision,
            warnings: Vec::new(),
        }
    }
}

impl<K: Serialize> Verdict<K> {
    /// The verdict as the host receives it, with typed edits merged into the
    /// original JSON.
    ///
    /// In WebAssembly nothing is freed: the instance is discarded after the call.
    pub(crate) fn into_contract(self, request: &mut Request<K>) -> Result<contract::Verdict, String>
    where
        K: k8s_openapi::Resource + serde::de::DeserializeOwned,
    {
        let changed_object = |object: Value| -> Result<Option<Mutation>, String> {
            if object == *request.object_json() {
                return Ok(None);
            }
            let text = serde_json::to_string(&object).map_err(serialize_error)?;
            discard(object);
            Ok(Some(Mutation::Object(text)))
        };
        let mutation = match self.decision {
            Decision::Accept => None,
            Decision::Reject(message) => {
                return Ok(contract::Verdict {
                    allowed: false,
                    message: Some(message),
                    warnings: self.warnings,
                    mutation: None,
                });
            }
            Decision::Mutate(edited) => {
                let base = serde_json::to_value(request.object()).map_err(serialize_error)?;
                let edited_json = serde_json::to_value(&edited).map_err(serialize_error)?;
                discard(edited);
                let mutation = if base == edited_json {
                    None
                } else {
                    let mut merged = request.object_json().clone();
                    apply_typed_edits(&mut merged, &base, &edited_json);
                    changed_object(merged)?
                };
                discard((base, edited_json));
                mutation
            }
            Decision::MutateJson(object) => changed_object(object)?,
            Decision::Set(values) => Some(Mutation::Set(
                values
                    .into_iter()
                    .map(|(pointer, value)| Field { pointer, value })
                    .collect(),
            )),
        };
        Ok(contract::Verdict {
            allowed: true,
            message: None,
            warnings: self.warnings,
            mutation,
        })
    }
}

/// Drops `value`, except in WebAssembly: a policy's instance is thrown away after
/// one call, so freeing its memory piece by piece is wasted time.
pub(crate) fn discard<T>(value: T) {
    if cfg!(target_arch = "wasm32") {
        std::mem::forget(value);
    } else {
        drop(value);
    }
}

fn serialize_error(e: serde_json::Error) -> String {
    format!("cannot serialize the mutated object: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_warning_is_kept_as_is() {
        let v = Verdict::<()>::reject("no").warn_all(["set a", "set b"]);
        assert!(v.is_rejected());
        assert_eq!(v.warnings(), ["set a", "set b"]);
    }
}
