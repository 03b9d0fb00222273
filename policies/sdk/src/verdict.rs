//! What a policy decides: accept, reject with a message, or set values — each
//! with warnings that explain it.

use serde::Serialize;
use stsguard_contract::{self as contract, Field, Mutation};

use crate::Error;

/// The longest warning the host sends, its `stsguard/<policy>: ` prefix
/// included, in characters: longer ones are cut with `…` (Kubernetes itself
/// cuts warnings at 256 characters once they add up to more than 4096).
pub use stsguard_contract::text::MAX_WARNING_CHARS;

/// A policy's answer about one request.
///
/// **One way to change the object: [`Verdict::set`]** a value at a JSON
/// pointer, as many as needed. Only those values travel to the host, which sets
/// them in its copy of the object with the contract's rules: the object's
/// other fields, including ones no Rust type knows, are never touched.
///
/// ```
/// # use stsguard_policy::Verdict;
/// let _ = Verdict::accept();
/// let _ = Verdict::reject("volumeClaimTemplate `data` has no storage request; add spec.resources.requests.storage");
/// let _ = Verdict::accept()
///     .set("/spec/podManagementPolicy", "Parallel")
///     .unwrap()
///     .warn("set spec.podManagementPolicy to Parallel");
/// ```
#[derive(Debug, Clone)]
#[must_use = "a verdict does nothing unless it is returned"]
pub struct Verdict {
    decision: Decision,
    warnings: Vec<String>,
}

#[derive(Debug, Clone)]
enum Decision {
    Accept,
    Reject(String),
    /// `(pointer, value as JSON text)`, applied in order by the host to the
    /// object as sent (WIT `mutation::set`).
    Set(Vec<Field>),
}

impl Verdict {
    /// Allow the request unchanged.
    pub fn accept() -> Self {
        Self::with(Decision::Accept)
    }

    /// Deny the request. The message reaches the user as `policy <name> denied
    /// StatefulSet <ns>/<name>: <message>`: say what is wrong and how to fix it.
    pub fn reject(message: impl Into<String>) -> Self {
        Self::with(Decision::Reject(message.into()))
    }

    /// Allow the request with the value at `pointer` (RFC 6901, e.g.
    /// `/spec/podManagementPolicy`, `/metadata/annotations/example.com~1key`)
    /// set to `value` — any serializable value, a typed k8s-openapi `Probe` as
    /// well as a string. Objects missing on the way are created; array elements
    /// must exist (set the whole array to add one); the empty pointer is the
    /// whole object. Call it again for more values; they apply in order. Values
    /// already in place change nothing, and if none changes anything no patch
    /// is sent. A value that would change the object's identity (name,
    /// namespace, uid, ...) fails the evaluation.
    ///
    /// `Err` when the value does not serialize, or on a rejecting verdict.
    pub fn set(mut self, pointer: impl Into<String>, value: impl Serialize) -> Result<Self, Error> {
        let field = Field {
            pointer: pointer.into(),
            value: serde_json::to_string(&value)?,
        };
        match &mut self.decision {
            Decision::Accept => self.decision = Decision::Set(vec![field]),
            Decision::Set(fields) => fields.push(field),
            Decision::Reject(_) => {
                return Err(Error::new(format!(
                    "Verdict::set({:?}) on a verdict that rejects",
                    field.pointer
                )));
            }
        }
        Ok(self)
    }

    /// Adds a warning, shown by kubectl. Keep it to one short line: the host
    /// sends it as one line (newlines become spaces), prefixed with
    /// `stsguard/<policy>: ` and cut to [`MAX_WARNING_CHARS`] in all, once (a
    /// repeated warning is sent once). `testing::Chain`
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

    fn with(decision: Decision) -> Self {
        Self {
            decision,
            warnings: Vec::new(),
        }
    }

    /// The verdict as the host receives it.
    pub(crate) fn into_contract(self) -> contract::Verdict {
        let (allowed, message, mutation) = match self.decision {
            Decision::Accept => (true, None, None),
            Decision::Reject(message) => (false, Some(message), None),
            Decision::Set(fields) => (true, None, Some(Mutation::Set(fields))),
        };
        contract::Verdict {
            allowed,
            message,
            warnings: self.warnings,
            mutation,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_kept_for_the_host_to_shape() {
        let v = Verdict::reject("no")
            .warn_all(["set a", "set b"])
            .warn("  c\n");
        assert!(v.is_rejected());
        assert_eq!(v.warnings(), ["set a", "set b", "  c\n"]);
    }

    #[test]
    fn values_are_set_in_order_and_never_on_a_rejection() {
        let verdict = Verdict::accept()
            .set("/a", 1)
            .unwrap()
            .set("/b", "x")
            .unwrap()
            .into_contract();
        assert_eq!(
            verdict.mutation,
            Some(Mutation::Set(vec![
                Field {
                    pointer: "/a".into(),
                    value: "1".into()
                },
                Field {
                    pointer: "/b".into(),
                    value: "\"x\"".into()
                },
            ]))
        );
        let error = Verdict::reject("no").set("/a", 1).unwrap_err();
        assert!(error.to_string().contains("rejects"), "{error}");
    }
}

/// What a policy does with the problems it finds, as a setting (`action: warn`
/// or `action: deny`): the built-ins that check what a StatefulSet needs from
/// the cluster warn by default (what they look for often arrives in the same
/// `kubectl apply`) and deny when an operator asks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Allow, with a warning per problem.
    #[default]
    Warn,
    /// Deny, with every problem in the message.
    Deny,
}

impl Action {
    /// The verdict for `problems`: accepted when there are none.
    pub fn verdict(self, problems: Vec<String>) -> Verdict {
        match (self, problems.is_empty()) {
            (_, true) => Verdict::accept(),
            (Self::Warn, false) => Verdict::accept().warn_all(problems),
            (Self::Deny, false) => Verdict::reject(problems.join("; ")),
        }
    }
}
