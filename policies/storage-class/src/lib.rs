//! `builtin:storage-class`: every volumeClaimTemplate of a StatefulSet gets a
//! StorageClass that exists.
//!
//! A claim whose `storageClassName` names a class that does not exist, or that
//! names none in a cluster without a default class, stays `Pending` for ever:
//! the StatefulSet is accepted, its pods are never scheduled, and nothing says
//! why until someone runs `kubectl describe pvc`. This policy says it when the
//! StatefulSet is written, listing the classes that do exist.
//!
//! Reads `storage.k8s.io/v1` StorageClasses (granted in the config: `reads:
//! [{apiVersion: storage.k8s.io/v1, kind: StorageClass}]`; the default chain
//! grants it).
//!
//! - CREATE: each template naming a class must name an existing one; a template
//!   naming none needs a default class (annotation
//!   `storageclass.kubernetes.io/is-default-class: "true"`, or its beta form);
//!   `storageClassName: ""` asks for no class (pre-bound volumes) and is fine.
//!   Problems are a warning each (or one denial listing them, with `action: deny`).
//! - UPDATE: checked only when the templates change (most of a template is
//!   immutable; some clusters allow changing parts of it).
//! - `storage-class.stsguard.io/skip: "true"` leaves the object alone.

use serde::Deserialize;
use stsguard_policy::cluster::{self, Kind};
use stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
use stsguard_policy::k8s_openapi::api::storage::v1::StorageClass;
use stsguard_policy::serde_json::Value;
use stsguard_policy::{Action, Error, Metadata, Operation, Policy, Request, Verdict};

/// `"true"`: the policy leaves the object alone.
pub const SKIP_ANNOTATION: &str = "storage-class.stsguard.io/skip";
/// How a StorageClass says it is the default one.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// Its beta form, still honoured by the API server's DefaultStorageClass plugin.
pub const BETA_DEFAULT_CLASS_ANNOTATION: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// The policy; see the crate documentation.
pub struct StorageClassPolicy;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    pub action: Action,
}

impl stsguard_policy::Settings for Settings {}

impl Policy for StorageClassPolicy {
    const METADATA: Metadata = Metadata {
        name: "storage-class",
        version: env!("CARGO_PKG_VERSION"),
        description: "Checks that each volumeClaimTemplate names a StorageClass that exists, or \
                      that the cluster has a default one, so the claims do not stay Pending; \
                      warns (or denies) listing the classes that exist.",
        mutating: false,
        settings_schema: include_str!("../settings.schema.json"),
    };
    const READS: &'static [Kind] = &[Kind::of::<StorageClass>()];
    type Object = StatefulSet;
    type Settings = Settings;

    fn evaluate(request: &Request<StatefulSet>, settings: &Settings) -> Result<Verdict, Error> {
        let skip = match request.flag_annotation(SKIP_ANNOTATION) {
            Ok(skip) => skip,
            Err(problem) => return Ok(Verdict::accept().warn(problem)),
        };
        let view = request.object_view::<View>()?;
        let templates = view
            .spec
            .map(|s| s.volume_claim_templates)
            .unwrap_or_default();
        if skip || templates.is_empty() {
            return Ok(Verdict::accept());
        }
        if request.operation() == Operation::Update {
            let old = request.old_object_view::<View>()?;
            let old_templates = old.and_then(|o| o.spec).map(|s| s.volume_claim_templates);
            if old_templates.as_ref() == Some(&templates) {
                return Ok(Verdict::accept());
            }
        }
        let classes: Vec<ClassView> =
            cluster::list_as(&Kind::of::<StorageClass>().resource_kind(), None, "")?;
        let problems: Vec<String> = templates
            .iter()
            .filter_map(|template| problem(template, &classes))
            .collect();
        Ok(settings.action.verdict(problems))
    }
}

stsguard_policy::export_policy!(StorageClassPolicy);

/// Why a template's claims would stay Pending, if they would.
fn problem(template: &ClaimTemplate, classes: &[ClassView]) -> Option<String> {
    let name = template.metadata.name.as_deref().unwrap_or("(unnamed)");
    match template.spec.storage_class_name.as_deref() {
        // No class on purpose: bound to a pre-provisioned volume.
        Some("") => None,
        Some(class) if classes.iter().any(|c| c.metadata.name == class) => None,
        Some(class) => Some(format!(
            "volumeClaimTemplate `{name}` names StorageClass `{class}`, which does not exist, so \
             its claims stay Pending; {}",
            existing(classes)
        )),
        None if classes.iter().any(ClassView::is_default) => None,
        None => Some(format!(
            "volumeClaimTemplate `{name}` names no storageClassName and the cluster has no default \
             StorageClass, so its claims stay Pending; {}",
            existing(classes)
        )),
    }
}

/// The classes there are, for the message.
fn existing(classes: &[ClassView]) -> String {
    if classes.is_empty() {
        return "the cluster has no StorageClass at all".into();
    }
    let names: Vec<String> = classes
        .iter()
        .take(8)
        .map(|c| {
            if c.is_default() {
                format!("{} (default)", c.metadata.name)
            } else {
                c.metadata.name.clone()
            }
        })
        .collect();
    let more = if classes.len() > names.len() {
        ", ..."
    } else {
        ""
    };
    format!("existing: {}{more}", names.join(", "))
}

/// The fields of the StatefulSet the policy reads.
#[derive(Deserialize)]
struct View {
    spec: Option<Spec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default, deserialize_with = "stsguard_policy::json::null_as_default")]
    volume_claim_templates: Vec<ClaimTemplate>,
}

#[derive(Debug, PartialEq, Deserialize)]
struct ClaimTemplate {
    #[serde(default)]
    metadata: ClaimMetadata,
    #[serde(default)]
    spec: ClaimSpec,
    /// The rest, for comparing an UPDATE's templates with the old ones.
    #[serde(flatten)]
    rest: Value,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
struct ClaimMetadata {
    name: Option<String>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimSpec {
    storage_class_name: Option<String>,
    #[serde(flatten)]
    rest: Value,
}

/// The fields of a StorageClass the policy reads.
#[derive(Deserialize)]
struct ClassView {
    metadata: ClassMetadata,
}

#[derive(Deserialize)]
struct ClassMetadata {
    name: String,
    #[serde(default, deserialize_with = "stsguard_policy::json::null_as_default")]
    annotations: cluster::Labels,
}

impl ClassView {
    fn is_default(&self) -> bool {
        [DEFAULT_CLASS_ANNOTATION, BETA_DEFAULT_CLASS_ANNOTATION]
            .iter()
            .any(|key| self.metadata.annotations.get(*key).map(String::as_str) == Some("true"))
    }
}

#[cfg(test)]
mod tests;
