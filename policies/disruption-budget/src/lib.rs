//! `builtin:disruption-budget`: a StatefulSet of several replicas has a
//! PodDisruptionBudget that selects its pods.
//!
//! Without one, `kubectl drain` (and every node upgrade or autoscaler
//! scale-down, which drain) may evict all replicas of a database at once: a
//! quorum lost during routine maintenance. A PodDisruptionBudget selecting the
//! pods makes the eviction API wait. This policy warns when there is none; it
//! never denies (the budget usually comes in the same `kubectl apply`, and
//! which budget is right is the app's call).
//!
//! Reads `policy/v1` PodDisruptionBudgets (granted in the config: `reads:
//! [{apiVersion: policy/v1, kind: PodDisruptionBudget}]`; the default chain
//! grants it).
//!
//! - CREATE with `replicas` ≥ `minReplicas` (2): a budget in the namespace must
//!   select the pod template's labels, or a warning says how to create one.
//! - UPDATE: checked again when the replicas or the pod template's labels
//!   change (scaling 1 → 3 is when a budget starts to matter).
//! - `disruption-budget.stsguard.io/skip: "true"` leaves the object alone.

use serde::Deserialize;
use stsguard_policy::cluster::{self, Kind, LabelSelector};
use stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
use stsguard_policy::k8s_openapi::api::policy::v1::PodDisruptionBudget;
use stsguard_policy::{Error, Metadata, Operation, Policy, Request, Verdict};

/// `"true"`: the policy leaves the object alone.
pub const SKIP_ANNOTATION: &str = "disruption-budget.stsguard.io/skip";

/// The policy; see the crate documentation.
pub struct DisruptionBudgetPolicy;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    pub min_replicas: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { min_replicas: 2 }
    }
}

impl stsguard_policy::Settings for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.min_replicas < 2 {
            return Err(format!(
                "minReplicas must be at least 2 (got {}): one replica cannot stay up through its \
                 own eviction",
                self.min_replicas
            ));
        }
        Ok(())
    }
}

impl Policy for DisruptionBudgetPolicy {
    const METADATA: Metadata = Metadata {
        name: "disruption-budget",
        version: env!("CARGO_PKG_VERSION"),
        description: "Warns when a StatefulSet of several replicas has no PodDisruptionBudget \
                      selecting its pods, so that one node drain could evict every replica at \
                      once.",
        mutating: false,
        settings_schema: include_str!("../settings.schema.json"),
    };
    const READS: &'static [Kind] = &[Kind::of::<PodDisruptionBudget>()];
    type Object = StatefulSet;
    type Settings = Settings;

    fn evaluate(request: &Request<StatefulSet>, settings: &Settings) -> Result<Verdict, Error> {
        let skip = match request.flag_annotation(SKIP_ANNOTATION) {
            Ok(skip) => skip,
            Err(problem) => return Ok(Verdict::accept().warn(problem)),
        };
        let Some(spec) = request.object_view::<View>()?.spec else {
            return Ok(Verdict::accept());
        };
        // The API server defaults replicas to 1.
        let replicas = spec.replicas.unwrap_or(1);
        if skip || replicas < settings.min_replicas {
            return Ok(Verdict::accept());
        }
        if request.operation() == Operation::Update {
            let old = request.old_object_view::<View>()?.and_then(|o| o.spec);
            let unchanged = old.is_some_and(|old| {
                old.replicas.unwrap_or(1) >= settings.min_replicas
                    && old.template.metadata.labels == spec.template.metadata.labels
            });
            if unchanged {
                return Ok(Verdict::accept());
            }
        }
        let labels = &spec.template.metadata.labels;
        let budgets: Vec<BudgetView> = cluster::list_as(
            &Kind::of::<PodDisruptionBudget>().resource_kind(),
            Some(request.namespace()),
            "",
        )?;
        let selected = budgets.iter().any(|budget| {
            budget
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|selector| selector.matches(labels))
        });
        if selected {
            return Ok(Verdict::accept());
        }
        let selector = labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Verdict::accept().warn(format!(
            "{replicas} replicas and no PodDisruptionBudget selects the pods: one node drain can \
             evict them all at once; e.g. kubectl create pdb {name} --selector={selector} \
             --max-unavailable=1",
            name = request.name()
        )))
    }
}

stsguard_policy::export_policy!(DisruptionBudgetPolicy);

/// The fields of the StatefulSet the policy reads.
#[derive(Deserialize)]
struct View {
    spec: Option<Spec>,
}

#[derive(Deserialize)]
struct Spec {
    replicas: Option<i64>,
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

/// The fields of a PodDisruptionBudget the policy reads.
#[derive(Deserialize)]
struct BudgetView {
    spec: Option<BudgetSpec>,
}

#[derive(Deserialize)]
struct BudgetSpec {
    /// `null` selects no pods; `{}` selects every pod of the namespace.
    selector: Option<LabelSelector>,
}

#[cfg(test)]
mod tests;
