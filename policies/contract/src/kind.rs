//! What a request does, to which kind of object, and which policies want to see it.

use serde::{Deserialize, Serialize};

/// The `operation` of an AdmissionRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// The object is being created; there is no `oldObject`.
    Create,
    /// The object is being replaced or patched; `oldObject` is the stored one.
    Update,
    /// The object is being deleted.
    Delete,
    /// A connect request (e.g. `pods/exec`).
    Connect,
}

impl Operation {
    /// Whether the request carries an object for policies to decide about.
    /// DELETE and CONNECT never reach a policy.
    pub fn has_object(self) -> bool {
        matches!(self, Self::Create | Self::Update)
    }

    /// `CREATE`, `UPDATE`, ... as the API server writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

/// The `kind` of an AdmissionRequest: `{group: apps, version: v1, kind: StatefulSet}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub struct GroupVersionKind {
    /// The API group; empty for the core group.
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

/// A kind of object a policy evaluates (WIT `target`); `*` matches any version
/// or kind, the group must match exactly.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Target {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// The wildcard of a target's version or kind.
pub const ANY: &str = "*";

impl Target {
    /// Whether a request for `kind` reaches a policy with this target.
    pub fn matches(&self, kind: &GroupVersionKind) -> bool {
        self.group == kind.group
            && (self.version == ANY || self.version == kind.version)
            && (self.kind == ANY || self.kind == kind.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gvk(group: &str, version: &str, kind: &str) -> GroupVersionKind {
        GroupVersionKind {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
        }
    }

    fn target(group: &str, version: &str, kind: &str) -> Target {
        Target {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn targets_match_group_exactly_and_version_and_kind_or_any() {
        let sts = gvk("apps", "v1", "StatefulSet");
        assert!(target("apps", "v1", "StatefulSet").matches(&sts));
        assert!(target("apps", "*", "*").matches(&sts));
        assert!(!target("apps", "v1beta1", "StatefulSet").matches(&sts));
        assert!(!target("", "*", "*").matches(&sts));
        assert!(!target("apps", "v1", "Deployment").matches(&sts));
        assert!(
            !target("*", "v1", "StatefulSet").matches(&sts),
            "no group wildcard"
        );
    }

    #[test]
    fn operations_read_as_the_api_server_writes_them() {
        let op: Operation = serde_json::from_str("\"UPDATE\"").unwrap();
        assert_eq!(op, Operation::Update);
        assert_eq!(op.as_str(), "UPDATE");
        assert!(op.has_object() && !Operation::Delete.has_object());
        assert!(serde_json::from_str::<Operation>("\"PATCH\"").is_err());
    }
}
