//! `builtin:headless-service`: a StatefulSet's `spec.serviceName` names a
//! headless Service in its namespace that selects its pods.
//!
//! The pods of a StatefulSet get stable DNS names (`web-0.web.ns.svc`) only
//! through the governing Service its `serviceName` names, and only when that
//! Service is headless (`clusterIP: None`) and selects the pods. Without it the
//! StatefulSet is accepted and runs, and replicas that look each other up by
//! name (databases, the course-lab counter) cannot: the mistake shows up later,
//! as a cluster that never forms.
//!
//! Reads `v1` Services (granted in the config: `reads: [{apiVersion: v1, kind:
//! Service}]`; the default chain grants it).
//!
//! - CREATE with `serviceName` set: the Service must exist, be headless and
//!   select the pod template's labels; otherwise a warning says what to create
//!   (or a denial, with `action: deny`).
//! - UPDATE: `serviceName` cannot change; checked again only when the pod
//!   template's labels change (a Service that selected the old labels may not
//!   select the new ones).
//! - No `serviceName`: nothing to check.
//! - `headless-service.stsguard.io/skip: "true"` leaves the object alone.
//!
//! A Service that does not exist yet is the normal case when the Service comes
//! after the StatefulSet in one `kubectl apply`: hence a warning by default.

use serde::Deserialize;
use stsguard_policy::cluster::{self, Kind};
use stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
use stsguard_policy::k8s_openapi::api::core::v1::Service;
use stsguard_policy::{Action, Error, Metadata, Operation, Policy, Request, Verdict};

/// `"true"`: the policy leaves the object alone.
pub const SKIP_ANNOTATION: &str = "headless-service.stsguard.io/skip";

/// The policy; see the crate documentation.
pub struct HeadlessServicePolicy;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    pub action: Action,
}

impl stsguard_policy::Settings for Settings {}

impl Policy for HeadlessServicePolicy {
    const METADATA: Metadata = Metadata {
        name: "headless-service",
        version: env!("CARGO_PKG_VERSION"),
        description: "Checks that a StatefulSet's serviceName names a headless Service in its \
                      namespace that selects its pods, so they get stable DNS names; warns \
                      (or denies) saying what to create.",
        mutating: false,
        settings_schema: include_str!("../settings.schema.json"),
    };
    const READS: &'static [Kind] = &[Kind::of::<Service>()];
    type Object = StatefulSet;
    type Settings = Settings;

    fn evaluate(request: &Request<StatefulSet>, settings: &Settings) -> Result<Verdict, Error> {
        let skip = match request.flag_annotation(SKIP_ANNOTATION) {
            Ok(skip) => skip,
            Err(problem) => return Ok(Verdict::accept().warn(problem)),
        };
        let view = request.object_view::<View>()?;
        let (Some(spec), false) = (view.spec, skip) else {
            return Ok(Verdict::accept());
        };
        let service_name = spec.service_name.unwrap_or_default();
        if service_name.is_empty() {
            return Ok(Verdict::accept());
        }
        let labels = spec.template.metadata.labels;
        if request.operation() == Operation::Update {
            let old = request.old_object_view::<View>()?;
            let old_labels = old.and_then(|o| o.spec).map(|s| s.template.metadata.labels);
            if old_labels.as_ref() == Some(&labels) {
                return Ok(Verdict::accept());
            }
        }
        let namespace = request.namespace();
        let service: Option<ServiceView> = cluster::get_as(
            &Kind::of::<Service>().resource_kind(),
            Some(namespace),
            &service_name,
        )?;
        let problem = match service {
            None => format!(
                "spec.serviceName `{service_name}` names no Service in {namespace}: create a \
                 headless Service `{service_name}` (clusterIP: None) selecting {}, so pods get \
                 DNS names like {}-0.{service_name}",
                show(&labels),
                request.name()
            ),
            Some(service) => match check(&service, &labels) {
                Ok(()) => return Ok(Verdict::accept()),
                Err(problem) => format!("Service `{service_name}` {problem}"),
            },
        };
        Ok(settings.action.verdict(vec![problem]))
    }
}

stsguard_policy::export_policy!(HeadlessServicePolicy);

/// What is wrong with the governing Service, if anything.
fn check(service: &ServiceView, labels: &cluster::Labels) -> Result<(), String> {
    let spec = service.spec.as_ref();
    let cluster_ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    if cluster_ip != "None" {
        let shown = if cluster_ip.is_empty() {
            "a cluster IP"
        } else {
            cluster_ip
        };
        return Err(format!(
            "is not headless (clusterIP {shown}, not None): pods get no stable DNS names; \
             recreate it with clusterIP: None (the field is immutable)"
        ));
    }
    let selector = spec.and_then(|s| s.selector.clone()).unwrap_or_default();
    if selector.is_empty() {
        return Err(format!(
            "has no selector, so it selects no pods: give it selector {}",
            show(labels)
        ));
    }
    if selector.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        return Err(format!(
            "selects {}, which the pod template's labels ({}) do not match: pods get no DNS \
             names through it",
            show(&selector),
            show(labels)
        ));
    }
    Ok(())
}

/// `app=web,tier=db`
fn show(labels: &cluster::Labels) -> String {
    if labels.is_empty() {
        return "(no labels)".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The fields of the StatefulSet the policy reads.
#[derive(Deserialize)]
struct View {
    spec: Option<Spec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    service_name: Option<String>,
    #[serde(default)]
    template: Template,
}

#[derive(Default, Deserialize)]
struct Template {
    #[serde(default)]
    metadata: TemplateMetadata,
}

#[derive(Default, Deserialize)]
struct TemplateMetadata {
    #[serde(default, deserialize_with = "stsguard_policy::json::null_as_default")]
    labels: cluster::Labels,
}

/// The fields of the Service the policy reads.
#[derive(Deserialize)]
struct ServiceView {
    spec: Option<ServiceSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceSpec {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    selector: Option<cluster::Labels>,
}

#[cfg(test)]
mod tests;
