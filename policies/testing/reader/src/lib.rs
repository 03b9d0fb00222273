//! A policy for the host's tests of cluster reads (contract 0.3), written with
//! the Rust SDK. Its settings name one read; it answers with a warning that
//! says what came back, so a test sees exactly what the host handed over:
//!
//! ```json
//! {"read": "get",  "apiVersion": "v1", "kind": "Service", "namespace": "default", "name": "web"}
//! {"read": "list", "apiVersion": "v1", "kind": "ConfigMap", "namespace": null, "selector": "app=x"}
//! ```
//!
//! - `get` warns `get <kind> <ns>/<name>: found <resourceVersion or ->` or `... none`;
//! - `list` warns `list <kind>: <n> objects: <ns/name,...>` (the first 20 names);
//! - a read the host refuses fails the evaluation with the host's message, so the
//!   configured failurePolicy decides; `"report": true` warns it instead
//!   (`refused <reason>: <message>`).
//!
//! It declares Services, StorageClasses, PodDisruptionBudgets, ConfigMaps and
//! `e2e.stsguard.io/v1` Widgets (a custom resource no cluster has: what a CRD
//! that is not installed looks like); anything else (a Secret) is a read of an
//! undeclared kind.

use serde::Deserialize;
use stsguard_policy::cluster::{self, Kind, ReadError, ResourceKind};
use stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
use stsguard_policy::k8s_openapi::api::core::v1::{ConfigMap, Service};
use stsguard_policy::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use stsguard_policy::k8s_openapi::api::storage::v1::StorageClass;
use stsguard_policy::serde_json::Value;
use stsguard_policy::{Error, Metadata, Policy, Request, Verdict};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    read: String,
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    selector: String,
    report: bool,
}

impl stsguard_policy::Settings for Settings {
    fn validate(&self) -> Result<(), String> {
        match self.read.as_str() {
            "get" | "list" => Ok(()),
            other => Err(format!("read `{other}`: get or list")),
        }
    }
}

pub struct Reader;

impl Policy for Reader {
    const METADATA: Metadata = Metadata {
        name: "reader",
        version: env!("CARGO_PKG_VERSION"),
        description: "Test-only policy that reads the cluster as its settings say.",
        mutating: false,
        settings_schema: r#"{"type":"object","required":["read","apiVersion","kind"]}"#,
    };
    const READS: &'static [Kind] = &[
        Kind::of::<Service>(),
        Kind::of::<StorageClass>(),
        Kind::of::<PodDisruptionBudget>(),
        Kind::of::<ConfigMap>(),
        Kind {
            api_version: "e2e.stsguard.io/v1",
            kind: "Widget",
        },
    ];
    type Object = StatefulSet;
    type Settings = Settings;

    fn evaluate(_: &Request<StatefulSet>, settings: &Settings) -> Result<Verdict, Error> {
        let kind = ResourceKind::new(&settings.api_version, &settings.kind);
        let namespace = settings.namespace.as_deref();
        let answer: Result<String, ReadError> = match settings.read.as_str() {
            "get" => cluster::get_as::<Value>(&kind, namespace, &settings.name).map(|found| {
                let found = found.map_or("none".to_string(), |object| {
                    format!(
                        "found {}",
                        object["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or("-")
                    )
                });
                format!(
                    "get {} {}/{}: {found}",
                    settings.kind,
                    namespace.unwrap_or(""),
                    settings.name
                )
            }),
            _ => cluster::list_as::<Value>(&kind, namespace, &settings.selector).map(|objects| {
                let names: Vec<String> = objects
                    .iter()
                    .take(20)
                    .map(|o| {
                        let m = &o["metadata"];
                        match m["namespace"].as_str() {
                            Some(ns) => format!("{ns}/{}", m["name"].as_str().unwrap_or("")),
                            None => m["name"].as_str().unwrap_or("").to_string(),
                        }
                    })
                    .collect();
                format!(
                    "list {}: {} objects: {}",
                    settings.kind,
                    objects.len(),
                    names.join(",")
                )
            }),
        };
        match answer {
            Ok(text) => Ok(Verdict::accept().warn(text)),
            Err(error) if settings.report => {
                Ok(Verdict::accept().warn(format!("refused {}: {error}", error.reason())))
            }
            Err(error) => Err(error.into()),
        }
    }
}

stsguard_policy::export_policy!(Reader);
