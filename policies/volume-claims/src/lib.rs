//! `builtin:volume-claims`: a StatefulSet's storage is really per pod.
//!
//! A StatefulSet exists to give each pod its own identity and its own storage,
//! through `spec.volumeClaimTemplates`: one PersistentVolumeClaim per template and
//! pod. The mistakes this policy catches all leave pods without their own data:
//!
//! | check | why |
//! |---|---|
//! | there is at least one volumeClaimTemplate | otherwise no pod has its own volume |
//! | each template requests storage | a claim without `resources.requests.storage` is never created, so the pod stays Pending |
//! | each template has access modes | likewise |
//! | each template is mounted by a container | otherwise the claim is created and never used |
//! | no pod volume has a template's name | a pod volume of the same name wins, so pods silently share it (e.g. an `emptyDir`) instead of their claim |
//!
//! On CREATE violations deny the StatefulSet, all of them in one message (setting
//! `warnOnly: true`, or the annotation `volume-claims.stsguard.io/skip: "true"`,
//! turns them into warnings). On UPDATE they are only warnings: the templates
//! cannot change after creation, and denying would block scaling and roll-outs.
//! The policy never changes the object.

mod view;

use serde::Deserialize;
use stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
use stsguard_policy::{Error, Metadata, Operation, Policy, Request, Settings, Verdict};

/// `"true"`: violations are only warnings for this StatefulSet.
pub const SKIP_ANNOTATION: &str = "volume-claims.stsguard.io/skip";

/// Settings; see `settings.schema.json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeClaimsSettings {
    /// Warn instead of denying on CREATE.
    pub warn_only: bool,
}

impl Settings for VolumeClaimsSettings {}

/// The policy; see the crate documentation.
pub struct VolumeClaimsPolicy;

impl Policy for VolumeClaimsPolicy {
    const METADATA: Metadata = Metadata {
        name: "volume-claims",
        version: env!("CARGO_PKG_VERSION"),
        description: "Requires per-pod storage: volumeClaimTemplates, each with a storage request \
                      and access modes, mounted by a container and not shadowed by a pod volume. \
                      Denies on CREATE (or warns, if configured); warns on UPDATE.",
        mutating: false,
        settings_schema: include_str!("../settings.schema.json"),
    };
    type Object = StatefulSet;
    type Settings = VolumeClaimsSettings;

    fn evaluate(
        request: &Request<StatefulSet>,
        settings: &VolumeClaimsSettings,
    ) -> Result<Verdict, Error> {
        let mut violations = Vec::new();
        let skip = request
            .flag_annotation(SKIP_ANNOTATION)
            .unwrap_or_else(|problem| {
                violations.push(Violation {
                    message: problem,
                    template_level: false,
                });
                false
            });
        violations.extend(violations_of(&request.object_view::<view::StatefulSet>()?));
        if violations.is_empty() {
            return Ok(Verdict::accept());
        }
        if request.operation() == Operation::Create && !settings.warn_only && !skip {
            return Ok(Verdict::reject(denial(&violations)));
        }
        let update = request.operation() == Operation::Update;
        Ok(Verdict::accept().warn_all(violations.into_iter().map(|v| {
            if update && v.template_level {
                format!(
                    "{} (templates cannot change after creation: recreate the StatefulSet)",
                    v.message
                )
            } else {
                v.message
            }
        })))
    }
}

stsguard_policy::export_policy!(VolumeClaimsPolicy);

/// One thing wrong, said so that the user knows what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    message: String,
    /// Fixing it means changing `volumeClaimTemplates`, which is immutable.
    template_level: bool,
}

impl Violation {
    fn template(message: String) -> Self {
        Self {
            message,
            template_level: true,
        }
    }

    fn pod(message: String) -> Self {
        Self {
            message,
            template_level: false,
        }
    }
}

/// All violations, in the order of the templates.
fn violations_of(sts: &view::StatefulSet) -> Vec<Violation> {
    let Some(spec) = &sts.spec else {
        return Vec::new();
    };
    let templates = spec.volume_claim_templates.as_deref().unwrap_or_default();
    if templates.is_empty() {
        return vec![Violation::template(
            "StatefulSet has no volumeClaimTemplates; add spec.volumeClaimTemplates so that each \
             pod gets its own PersistentVolumeClaim"
                .to_owned(),
        )];
    }
    let pod = spec.template.spec.as_ref();
    let volumes = pod.and_then(|p| p.volumes.as_deref()).unwrap_or_default();
    let mounted = |name: &str| {
        pod.into_iter()
            .flat_map(|p| {
                p.containers
                    .iter()
                    .chain(p.init_containers.iter().flatten())
            })
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .any(|m| m.name == name)
    };
    let mut violations = Vec::new();
    for template in templates {
        let name = template.metadata.name.as_deref().unwrap_or("(unnamed)");
        if !requests_storage(template) {
            violations.push(Violation::template(format!(
                "volumeClaimTemplate `{name}` has no storage request; add \
                 spec.resources.requests.storage, e.g. 1Gi"
            )));
        }
        let modes = template
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.as_deref());
        if modes.unwrap_or_default().is_empty() {
            violations.push(Violation::template(format!(
                "volumeClaimTemplate `{name}` has no access modes; add spec.accessModes, e.g. \
                 [ReadWriteOnce]"
            )));
        }
        if volumes.iter().any(|v| v.name == name) {
            violations.push(Violation::pod(format!(
                "pod volume `{name}` shadows volumeClaimTemplate `{name}`, so pods mount it instead \
                 of their own claim; remove or rename it in spec.template.spec.volumes"
            )));
        } else if !mounted(name) {
            violations.push(Violation::pod(format!(
                "volumeClaimTemplate `{name}` is not mounted by any container; add a volumeMount \
                 named `{name}` or remove the template"
            )));
        }
    }
    violations
}

fn requests_storage(template: &view::ClaimTemplate) -> bool {
    template
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .is_some_and(|r| r.contains_key("storage"))
}

/// One denial message holding every violation.
fn denial(violations: &[Violation]) -> String {
    match violations {
        [only] => only.message.clone(),
        all => {
            let mut message = format!("{} problems:", all.len());
            for (i, v) in all.iter().enumerate() {
                message.push_str(&format!(" ({}) {}.", i + 1, v.message));
            }
            message
        }
    }
}

#[cfg(test)]
mod tests;
