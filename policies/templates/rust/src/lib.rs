//! `{{name}}`: a stsguard policy, from the Rust template of `stsguard new`.
//!
//! - StatefulSets asking for more than `maxReplicas` replicas are denied.
//! - StatefulSets without `spec.minReadySeconds` get the configured value (a new
//!   pod must stay Ready that long before it counts as available, which slows a
//!   broken roll-out down). The field may change on UPDATE without restarting
//!   pods, so the policy sets it on CREATE and UPDATE alike.
//!
//! Every change is explained by a warning, and a StatefulSet that already
//! complies comes back unchanged.

use serde::Deserialize;
use stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
use stsguard_policy::{Error, Metadata, Policy, Request, Settings, Verdict};

/// The fields of a StatefulSet the policy reads. A small view is the fast way
/// in WebAssembly; `request.object_view::<StatefulSet>()` reads the whole typed
/// object instead, if you need much of it.
#[derive(Debug, Deserialize)]
struct View {
    spec: Option<Spec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    replicas: Option<i32>,
    min_ready_seconds: Option<i32>,
}

/// The policy's settings, from `settings:` in the stsguard configuration.
/// `default`: every key is optional; `deny_unknown_fields`: a typo is an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct {{name_camel}}Settings {
    pub min_ready_seconds: i32,
    pub max_replicas: i32,
}

impl Default for {{name_camel}}Settings {
    fn default() -> Self {
        Self {
            min_ready_seconds: 10,
            max_replicas: 10,
        }
    }
}

impl Settings for {{name_camel}}Settings {
    fn validate(&self) -> Result<(), String> {
        if self.min_ready_seconds < 0 {
            return Err(format!(
                "`minReadySeconds` must be 0 or more, not {}",
                self.min_ready_seconds
            ));
        }
        if self.max_replicas < 1 {
            return Err(format!(
                "`maxReplicas` must be at least 1, not {}",
                self.max_replicas
            ));
        }
        Ok(())
    }
}

pub struct {{name_camel}};

impl Policy for {{name_camel}} {
    const METADATA: Metadata = Metadata {
        name: "{{name}}",
        version: env!("CARGO_PKG_VERSION"),
        description: "Denies StatefulSets with more than maxReplicas replicas and gives the \
                      others spec.minReadySeconds.",
        mutating: true,
        settings_schema: include_str!("../settings.schema.json"),
    };
    /// Requests for any other kind pass untouched without reaching `evaluate`.
    type Object = StatefulSet;
    type Settings = {{name_camel}}Settings;

    fn evaluate(request: &Request<StatefulSet>, settings: &{{name_camel}}Settings) -> Result<Verdict, Error> {
        // Read: the object into the view (an object that is no StatefulSet at
        // all is an error, and `?` fails the evaluation with it)...
        let Some(spec) = request.object_view::<View>()?.spec else {
            return Ok(Verdict::accept());
        };
        let replicas = spec.replicas.unwrap_or(1);
        if replicas > settings.max_replicas {
            return Ok(Verdict::reject(format!(
                "spec.replicas is {replicas}, more than the {} this cluster allows; lower it or ask \
                 the platform team",
                settings.max_replicas
            )));
        }
        if spec.min_ready_seconds.is_some() {
            return Ok(Verdict::accept());
        }
        // ...write: the values to set, at JSON pointers. The host sets them in its
        // copy of the object, so every other field stays as the user sent it.
        Ok(Verdict::accept()
            .set("/spec/minReadySeconds", settings.min_ready_seconds)?
            .warn(format!(
                "set spec.minReadySeconds to {}",
                settings.min_ready_seconds
            )))
    }
}

stsguard_policy::export_policy!({{name_camel}});

#[cfg(test)]
mod tests {
    use stsguard_policy::serde_json::{Value, json};
    use stsguard_policy::testing;

    use super::*;

    fn fixture(name: &str) -> Value {
        testing::load_request(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR")))
    }

    #[test]
    fn sets_min_ready_seconds_and_says_so() {
        let request = fixture("web.create.json");
        let out = testing::evaluate::<{{name_camel}}>(&request, &json!({"minReadySeconds": 30})).unwrap();
        assert!(out.allowed);
        let mut expected = request["object"].clone();
        expected["spec"]["minReadySeconds"] = json!(30);
        assert_eq!(out.mutated_object, Some(expected));
        assert_eq!(out.warnings, ["set spec.minReadySeconds to 30"]);
    }

    #[test]
    fn a_compliant_statefulset_is_left_alone() {
        let mut request = fixture("web.create.json");
        request["object"]["spec"]["minReadySeconds"] = json!(5);
        let out = testing::evaluate::<{{name_camel}}>(&request, &json!({})).unwrap();
        assert_eq!(
            (out.allowed, out.mutated_object, out.warnings.len()),
            (true, None, 0)
        );
    }

    #[test]
    fn too_many_replicas_are_denied() {
        let out =
            testing::evaluate::<{{name_camel}}>(&fixture("web.create.json"), &json!({"maxReplicas": 2}))
                .unwrap();
        assert!(!out.allowed);
        assert_eq!(
            out.message.as_deref(),
            Some(
                "spec.replicas is 3, more than the 2 this cluster allows; lower it or ask the platform team"
            )
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let e = testing::validate_settings::<{{name_camel}}>(&json!({"maxReplicas": 0})).unwrap_err();
        assert_eq!(
            e,
            "invalid settings: `maxReplicas` must be at least 1, not 0"
        );
        let e = testing::validate_settings::<{{name_camel}}>(&json!({"maxreplicas": 3})).unwrap_err();
        assert!(e.contains("unknown field `maxreplicas`"), "{e}");
    }
}
