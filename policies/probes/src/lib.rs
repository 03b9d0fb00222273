//! `builtin:probes`: every container of a StatefulSet's pods gets a readiness and
//! a liveness probe.
//!
//! Without probes a Service routes traffic to pods that are not ready and a hung
//! process is never restarted. The API server does not fully validate a pod
//! template, so a bad probe is accepted and every pod then fails; the probes this
//! policy adds are therefore fully specified (all timings, exactly one handler) and
//! safe for any server:
//!
//! ```text
//!   for each container, and each native sidecar (init container with restartPolicy: Always)
//!     has both probes ─────────────────────────► left alone (existing probes never change)
//!     declares no TCP port (and none is named) ─► warning, no probe invented
//!     otherwise ──► the missing probe(s) on its first declared TCP port:
//!                     tcpSocket by default; httpGet for the main container when a
//!                     path is named by annotation or setting (port likewise)
//!   CREATE: added, each change explained in a warning
//!   UPDATE: added only if the pod template changes anyway (adding a probe restarts
//!           every pod); otherwise a warning says what would be added
//! ```
//!
//! The *main container* is the one the pod template's
//! `kubectl.kubernetes.io/default-container` annotation names, else the first one.
//! Only it takes the HTTP path and port from annotations and settings: a sidecar
//! does not serve the app's health endpoint. Plain init containers are left alone.
//!
//! Annotations on the StatefulSet (values are checked: a bad one is denied on CREATE
//! and only reported, with nothing added, on UPDATE):
//! `probes.stsguard.io/skip: "true"`, `probes.stsguard.io/http-path`,
//! `probes.stsguard.io/readiness-path`, `probes.stsguard.io/liveness-path`,
//! `probes.stsguard.io/port` (a name the main container declares, or a number).

mod port;
mod probe;
mod settings;
mod view;

use stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
use stsguard_policy::{Error, Metadata, Operation, Policy, Request, Verdict};

pub use crate::port::PortRef;
use crate::probe::Handler;
pub use crate::settings::{
    LIVENESS_DEFAULTS, ProbeSettings, ProbesSettings, READINESS_DEFAULTS, Timing,
};
use crate::view::{Container, PodSpec};

/// `"true"`: the policy leaves the StatefulSet alone.
pub const SKIP_ANNOTATION: &str = "probes.stsguard.io/skip";
/// httpGet probes on this path (both probes of the main container).
pub const HTTP_PATH_ANNOTATION: &str = "probes.stsguard.io/http-path";
/// httpGet readiness probe on this path.
pub const READINESS_PATH_ANNOTATION: &str = "probes.stsguard.io/readiness-path";
/// httpGet liveness probe on this path.
pub const LIVENESS_PATH_ANNOTATION: &str = "probes.stsguard.io/liveness-path";
/// Port name or number for the main container's added probes.
pub const PORT_ANNOTATION: &str = "probes.stsguard.io/port";
/// The Kubernetes convention for "the main container" (`kubectl logs`, `exec`).
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// The policy; see the crate documentation.
pub struct ProbesPolicy;

impl Policy for ProbesPolicy {
    const METADATA: Metadata = Metadata {
        name: "probes",
        version: env!("CARGO_PKG_VERSION"),
        description: "Adds fully specified readiness and liveness probes to StatefulSet \
                      containers that lack them (tcpSocket on the first declared port, or \
                      httpGet on a path named by annotation or setting); on UPDATE only when \
                      the pod template changes anyway.",
        mutating: true,
        settings_schema: include_str!("../settings.schema.json"),
    };
    type Object = StatefulSet;
    type Settings = ProbesSettings;

    fn evaluate(
        request: &Request<StatefulSet>,
        settings: &ProbesSettings,
    ) -> Result<Verdict, Error> {
        let overrides = match Overrides::read(request) {
            Ok(overrides) => overrides,
            Err(problems) => return Ok(refuse(request, problems, Vec::new())),
        };
        if overrides.skip {
            return Ok(Verdict::accept());
        }
        let sts = request.object_view::<view::StatefulSet>()?;
        let Some(pod) = pod_spec(&sts) else {
            return Ok(Verdict::accept());
        };
        let main = main_container(&sts, pod);
        let mut warnings = Vec::new();
        let mut problems = Vec::new();
        let mut additions = Vec::new();
        for (slot, container) in slots(pod) {
            let who = slot.describe(&container.name);
            warnings.extend(user_probe_problems(container, &who));
            let wants_readiness = container.readiness_probe.is_none();
            let wants_liveness = container.liveness_probe.is_none();
            if !wants_readiness && !wants_liveness {
                continue;
            }
            let is_main = matches!(slot, Slot::Container(_)) && container.name == main;
            let plan = if is_main {
                main_plan(container, &overrides, settings)
            } else {
                Ok(first_port_plan(container))
            };
            match plan {
                Ok(Some((readiness, liveness))) => additions.push(Addition {
                    slot,
                    who,
                    readiness: wants_readiness.then_some(readiness),
                    liveness: wants_liveness.then_some(liveness),
                }),
                Ok(None) => warnings.push(format!(
                    "{who} declares no TCP port, so no probe was added; declare its port under \
                     ports or give it readinessProbe and livenessProbe"
                )),
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Ok(refuse(request, problems, warnings));
        }
        if additions.is_empty() {
            return Ok(Verdict::accept().warn_all(warnings));
        }
        if request.operation() == Operation::Update && !template_changes(request)? {
            let would = additions.iter().map(|a| {
                format!(
                    "would add {} to {}, but only with the next pod template change: adding \
                     probes now would restart every pod",
                    a.describe(),
                    a.who
                )
            });
            return Ok(Verdict::accept().warn_all(warnings).warn_all(would));
        }
        let readiness_timing = settings.readiness.timing(READINESS_DEFAULTS);
        let liveness_timing = settings.liveness.timing(LIVENESS_DEFAULTS);
        // Typed probes, placed into the JSON: no copy or re-serialization of the
        // whole object.
        let mut verdict = Verdict::accept();
        for addition in &additions {
            let at = addition.slot.pointer();
            if let Some(handler) = &addition.readiness {
                verdict = verdict.set(
                    format!("{at}/readinessProbe"),
                    handler.probe(readiness_timing),
                )?;
            }
            if let Some(handler) = &addition.liveness {
                verdict = verdict.set(
                    format!("{at}/livenessProbe"),
                    handler.probe(liveness_timing),
                )?;
            }
            warnings.push(format!("added {} to {}", addition.describe(), addition.who));
        }
        Ok(verdict.warn_all(warnings))
    }
}

stsguard_policy::export_policy!(ProbesPolicy);

/// What the StatefulSet's annotations ask for, validated.
#[derive(Debug, Default)]
struct Overrides {
    skip: bool,
    http_path: Option<String>,
    readiness_path: Option<String>,
    liveness_path: Option<String>,
    port: Option<PortRef>,
}

impl Overrides {
    /// The annotations, or every problem with them (each naming the annotation).
    fn read(request: &Request<StatefulSet>) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        match request.flag_annotation(SKIP_ANNOTATION) {
            Ok(true) => {
                return Ok(Self {
                    skip: true,
                    ..Self::default()
                });
            }
            Ok(false) => {}
            Err(problem) => problems.push(problem),
        }
        let mut path = |key: &str| {
            let value = request.annotation(key)?;
            match settings::check_path(value) {
                Ok(()) => Some(value.to_owned()),
                Err(e) => {
                    problems.push(format!("annotation {key}: {e}"));
                    None
                }
            }
        };
        let http_path = path(HTTP_PATH_ANNOTATION);
        let readiness_path = path(READINESS_PATH_ANNOTATION);
        let liveness_path = path(LIVENESS_PATH_ANNOTATION);
        let port =
            request
                .annotation(PORT_ANNOTATION)
                .and_then(|value| match PortRef::parse(value) {
                    Ok(port) => Some(port),
                    Err(e) => {
                        problems.push(format!("annotation {PORT_ANNOTATION}: {e}"));
                        None
                    }
                });
        if problems.is_empty() {
            Ok(Self {
                skip: false,
                http_path,
                readiness_path,
                liveness_path,
                port,
            })
        } else {
            Err(problems)
        }
    }
}

/// A bad annotation: denied on CREATE; on UPDATE a warning, and nothing is added
/// (the object was accepted before, and denying would block unrelated changes).
fn refuse(request: &Request<StatefulSet>, problems: Vec<String>, warnings: Vec<String>) -> Verdict {
    match request.operation() {
        Operation::Create => Verdict::reject(problems.join("; ")).warn_all(warnings),
        _ => Verdict::accept().warn_all(warnings).warn_all(problems),
    }
}

/// Where a container lives in the pod spec.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Container(usize),
    /// An init container with `restartPolicy: Always`: runs beside the app.
    Sidecar(usize),
}

impl Slot {
    fn describe(self, name: &str) -> String {
        match self {
            Self::Container(_) => format!("container `{name}`"),
            Self::Sidecar(_) => format!("sidecar `{name}`"),
        }
    }

    /// The container's JSON pointer; the view reads the JSON lists in order.
    fn pointer(self) -> String {
        match self {
            Self::Container(i) => format!("/spec/template/spec/containers/{i}"),
            Self::Sidecar(i) => format!("/spec/template/spec/initContainers/{i}"),
        }
    }
}

/// The app containers, then the native sidecars; plain init containers are skipped.
fn slots(pod: &PodSpec) -> impl Iterator<Item = (Slot, &Container)> {
    let containers = pod
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| (Slot::Container(i), c));
    let sidecars = pod
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| c.restart_policy.as_deref() == Some("Always"))
        .map(|(i, c)| (Slot::Sidecar(i), c));
    containers.chain(sidecars)
}

/// The probes one container gets.
struct Addition {
    slot: Slot,
    who: String,
    readiness: Option<Handler>,
    liveness: Option<Handler>,
}

impl Addition {
    /// `readinessProbe and livenessProbe (tcpSocket on port http)`.
    fn describe(&self) -> String {
        match (&self.readiness, &self.liveness) {
            (Some(r), Some(l)) if r == l => {
                format!("readinessProbe and livenessProbe ({})", r.describe())
            }
            (Some(r), Some(l)) => format!(
                "readinessProbe ({}) and livenessProbe ({})",
                r.describe(),
                l.describe()
            ),
            (Some(r), None) => format!("readinessProbe ({})", r.describe()),
            (None, Some(l)) => format!("livenessProbe ({})", l.describe()),
            (None, None) => unreachable!("an addition adds at least one probe"),
        }
    }
}

/// tcpSocket probes on the container's first declared TCP port, if it has one.
fn first_port_plan(container: &Container) -> Option<(Handler, Handler)> {
    let port = port::first_declared(container)?;
    let handler = Handler::TcpSocket { port };
    Some((handler.clone(), handler))
}

/// The main container's probes: annotations first, then settings, then the default.
fn main_plan(
    container: &Container,
    overrides: &Overrides,
    settings: &ProbesSettings,
) -> Result<Option<(Handler, Handler)>, String> {
    let port = match &overrides.port {
        // A name only resolves if the container declares it; a number is used as given.
        Some(name @ PortRef::Name(_)) if !port::declares(container, name) => {
            return Err(format!(
                "annotation {PORT_ANNOTATION} names port {name}, which container `{}` does not \
                 declare; declare it under ports or give the port number",
                container.name
            ));
        }
        Some(port) => Some(port.clone()),
        None => settings
            .port()
            .filter(|port| port::declares(container, port))
            .or_else(|| port::first_declared(container)),
    };
    let Some(port) = port else {
        return Ok(None);
    };
    let handler = |path: Option<&String>| match path {
        Some(path) => Handler::HttpGet {
            path: path.clone(),
            port: port.clone(),
        },
        None => Handler::TcpSocket { port: port.clone() },
    };
    let readiness = overrides
        .readiness_path
        .as_ref()
        .or(overrides.http_path.as_ref())
        .or(settings.readiness.path.as_ref())
        .or(settings.http_path.as_ref());
    let liveness = overrides
        .liveness_path
        .as_ref()
        .or(overrides.http_path.as_ref())
        .or(settings.liveness.path.as_ref())
        .or(settings.http_path.as_ref());
    Ok(Some((handler(readiness), handler(liveness))))
}

/// Warnings about probes the user wrote that would make every pod fail.
fn user_probe_problems(container: &Container, who: &str) -> Vec<String> {
    let probes = [
        (&container.readiness_probe, "readinessProbe", false),
        (&container.liveness_probe, "livenessProbe", true),
    ];
    let mut warnings = Vec::new();
    for (probe, field, liveness) in probes {
        if let Some(probe) = probe {
            warnings.extend(
                probe::problems(probe, field, liveness)
                    .into_iter()
                    .map(|problem| format!("{who}: {problem}; pods will fail to start")),
            );
        }
    }
    warnings
}

fn pod_spec(sts: &view::StatefulSet) -> Option<&PodSpec> {
    sts.spec.as_ref()?.template.spec.as_ref()
}

/// The container named by the pod template's default-container annotation, else
/// the first one.
fn main_container<'a>(sts: &'a view::StatefulSet, pod: &'a PodSpec) -> &'a str {
    let named = sts
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION))
        .filter(|name| pod.containers.iter().any(|c| &c.name == *name));
    named
        .map(String::as_str)
        .or_else(|| pod.containers.first().map(|c| c.name.as_str()))
        .unwrap_or_default()
}

/// Whether this UPDATE changes the pod template (and so restarts the pods anyway).
/// Compared as JSON, as sent: fields the typed view does not know count too. Only
/// the templates are read into JSON trees, not the whole objects.
fn template_changes(request: &Request<StatefulSet>) -> Result<bool, Error> {
    let Some(old) = request.old_object_view::<view::TemplateJson>()? else {
        return Ok(true);
    };
    Ok(old != request.object_view::<view::TemplateJson>()?)
}

#[cfg(test)]
mod tests;
