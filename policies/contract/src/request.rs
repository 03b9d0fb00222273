//! AdmissionRequests made up for an object, shaped as the API server writes them:
//! what `stsguard eval` sends its chain and what the SDK's harness gives a policy
//! under test, so both see the same fields.

use serde_json::{Value, json};

/// Who makes a made-up request, and how.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub uid: &'a str,
    pub username: &'a str,
    pub groups: &'a [&'a str],
    pub dry_run: bool,
    /// `options.fieldManager`, when there is one.
    pub field_manager: Option<&'a str>,
}

/// The AdmissionRequest (the `request` member of a review) that creates `object`,
/// or updates `old_object` to it: kind and resource from its `apiVersion` and
/// `kind`, name and namespace from its metadata (`default_namespace` when it names
/// none).
pub fn admission_request(
    object: Value,
    old_object: Option<Value>,
    default_namespace: Option<&str>,
    who: &Requester<'_>,
) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = format!("{}s", kind.to_lowercase());
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let gvr = json!({"group": group, "version": version, "resource": resource});
    let (operation, options_kind) = match old_object {
        Some(_) => ("UPDATE", "UpdateOptions"),
        None => ("CREATE", "CreateOptions"),
    };
    let namespace = match &object["metadata"]["namespace"] {
        Value::String(namespace) => json!(namespace),
        _ => json!(default_namespace),
    };
    let mut options = json!({"kind": options_kind, "apiVersion": "meta.k8s.io/v1"});
    if let Some(manager) = who.field_manager {
        options["fieldManager"] = json!(manager);
    }
    json!({
        "uid": who.uid,
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": object["metadata"]["name"],
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": who.username, "groups": who.groups},
        "object": object,
        "oldObject": old_object,
        "dryRun": who.dry_run,
        "options": options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHO: Requester<'static> = Requester {
        uid: "u1",
        username: "alice",
        groups: &["devs"],
        dry_run: true,
        field_manager: None,
    };

    #[test]
    fn a_request_is_shaped_like_the_api_server_s() {
        let object =
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"}});
        let create = admission_request(object.clone(), None, Some("default"), &WHO);
        assert_eq!(create["operation"], "CREATE");
        assert_eq!(
            create["resource"],
            json!({"group": "apps", "version": "v1", "resource": "statefulsets"})
        );
        assert_eq!(create["namespace"], "default");
        assert_eq!(create["oldObject"], Value::Null);
        assert_eq!(
            create["options"],
            json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"})
        );
        let update = admission_request(
            object.clone(),
            Some(object),
            None,
            &Requester {
                field_manager: Some("kubectl"),
                ..WHO
            },
        );
        assert_eq!(update["operation"], "UPDATE");
        assert_eq!(
            update["namespace"],
            Value::Null,
            "no namespace and no default"
        );
        assert_eq!(update["options"]["fieldManager"], "kubectl");
        assert_eq!(
            update["userInfo"],
            json!({"username": "alice", "groups": ["devs"]})
        );
    }
}
