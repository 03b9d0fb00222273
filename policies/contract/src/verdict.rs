//! A policy's verdict as the host receives it, and the one step that applies it.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

use crate::mutation::{self, Mutation, MutationError};

/// The outcome of one evaluation (WIT `verdict`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `false` denies the request.
    pub allowed: bool,
    /// Why it was denied.
    pub message: Option<String>,
    /// As the policy returned them, before [`crate::text::add_warnings`].
    pub warnings: Vec<String>,
    /// The change to the object; ignored when the verdict denies.
    pub mutation: Option<Mutation>,
}

/// What an allowing or denying verdict came to once applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub allowed: bool,
    pub message: Option<String>,
    pub warnings: Vec<String>,
    /// Whether the object changed.
    pub changed: bool,
}

/// Why a verdict could not be applied: the evaluation counts as failed, and the
/// policy's failurePolicy decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictError {
    /// The policy's metadata says `mutating: false`, yet it returned a mutation.
    UndeclaredMutation,
    Mutation(MutationError),
}

impl fmt::Display for VerdictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UndeclaredMutation => {
                f.write_str("returned a mutation but declares itself non-mutating")
            }
            Self::Mutation(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for VerdictError {}

impl From<MutationError> for VerdictError {
    fn from(error: MutationError) -> Self {
        Self::Mutation(error)
    }
}

impl Verdict {
    /// Applies the verdict of a policy (`mutating` as its metadata says) to
    /// `object`, by [`mutation::apply`]. On error `object` is as it was.
    pub fn apply(
        self,
        mutating: bool,
        object: &mut Cow<'_, Value>,
    ) -> Result<Applied, VerdictError> {
        let Verdict {
            allowed,
            message,
            warnings,
            mutation,
        } = self;
        if mutation.is_some() && !mutating {
            return Err(VerdictError::UndeclaredMutation);
        }
        let changed = match mutation.filter(|_| allowed) {
            Some(mutation) => mutation::apply(object, mutation)?,
            None => false,
        };
        Ok(Applied {
            allowed,
            message,
            warnings,
            changed,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Field;

    fn verdict(allowed: bool, mutation: Option<Mutation>) -> Verdict {
        Verdict {
            allowed,
            message: None,
            warnings: vec![],
            mutation,
        }
    }

    fn label() -> Option<Mutation> {
        Some(Mutation::Set(vec![Field {
            pointer: "/metadata/labels/a".into(),
            value: "\"b\"".into(),
        }]))
    }

    #[test]
    fn a_non_mutating_policy_may_not_mutate() {
        let object = json!({"metadata": {}});
        let mut working = Cow::Borrowed(&object);
        let error = verdict(true, label())
            .apply(false, &mut working)
            .unwrap_err();
        assert_eq!(error, VerdictError::UndeclaredMutation);
        assert!(error.to_string().contains("non-mutating"));
    }

    #[test]
    fn a_denial_changes_nothing_and_an_allowance_applies_its_mutation() {
        let object = json!({"metadata": {}});
        let mut working = Cow::Borrowed(&object);
        let denied = verdict(false, label()).apply(true, &mut working).unwrap();
        assert!(!denied.allowed && !denied.changed);
        assert!(matches!(working, Cow::Borrowed(_)));
        let allowed = verdict(true, label()).apply(true, &mut working).unwrap();
        assert!(allowed.changed);
        assert_eq!(working["metadata"]["labels"]["a"], "b");
    }
}
