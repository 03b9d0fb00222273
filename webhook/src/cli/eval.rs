//! `stsguard eval`: the policy chain offline, on manifest files — the same
//! decisions the webhook would make, for CI pipelines and GitOps repositories.
//!
//! Each object becomes a dry-run AdmissionRequest: CREATE, or UPDATE when
//! `--old` holds an object of the same kind, namespace and name. The chain is
//! a config file's, the built-ins, or one module given with `--policy`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::CacheArgs;
use super::manifests::{self, admission_request, identity, parse_request, read_objects};
use super::outcome::DecisionReport;
use super::registry::{RegistryArgs, load_policies};
use crate::admission;
use crate::chain::Selection;
use crate::config::{Config, ModuleSource};
use crate::engine::Engine;
use stsguard_contract::request::Requester;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Config file with the policy chain [default: the built-in policies].
    #[arg(long, env = "STSGUARD_CONFIG", conflicts_with = "policy")]
    config: Option<PathBuf>,
    /// Run this one policy instead of a chain: a `.wasm` component,
    /// `builtin:NAME` or `oci://HOST/REPO:TAG`. It is named after the file (`build/demo.wasm` → `demo`).
    #[arg(long, env = "STSGUARD_EVAL_POLICY")]
    policy: Option<ModuleSource>,
    /// Settings for --policy: JSON or YAML text, or `@FILE` [default: `{}`].
    #[arg(long, env = "STSGUARD_EVAL_SETTINGS", requires = "policy")]
    settings: Option<String>,
    /// Manifests of the objects as they are now: objects that match one (same
    /// kind, namespace and name) are evaluated as an UPDATE of it.
    #[arg(long, env = "STSGUARD_EVAL_OLD", value_delimiter = ',')]
    old: Vec<PathBuf>,
    /// What to print on stdout: `manifests`, the objects as the chain leaves
    /// them (YAML; warnings and denials go to stderr); or, per object, the
    /// decision with each policy's outcome, warnings, the patch and the mutated
    /// object, as `json` or `yaml`.
    #[arg(short, long, env = "STSGUARD_EVAL_OUTPUT", value_enum, default_value_t = Output::Manifests)]
    output: Output,
    /// Cluster objects the policies that read the cluster see (Services,
    /// StorageClasses, ...: YAML or JSON manifests, multi-document or a `List`),
    /// as the server would see them in its caches. The objects of the
    /// manifests evaluated count too (applied together, they will exist);
    /// nothing else does: without --context, the cluster is otherwise empty.
    #[arg(long, env = "STSGUARD_EVAL_CONTEXT", value_delimiter = ',')]
    context: Vec<PathBuf>,
    /// Manifest files (YAML, multi-document, or JSON; `-` reads stdin).
    #[arg(
        required = true,
        env = "STSGUARD_EVAL_MANIFESTS",
        value_delimiter = ','
    )]
    manifests: Vec<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Manifests,
    Json,
    Yaml,
}

/// Exit 0 when every object is allowed, 1 when one is denied.
pub fn run(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let EvalArgs {
        config,
        policy,
        settings,
        old,
        context,
        output,
        manifests,
        cache,
        registry,
    } = args;
    let config = match policy {
        Some(module) => {
            let settings = match settings {
                Some(text) => manifests::settings_argument(&text)?,
                None => serde_json::json!({}),
            };
            Config::single(module, settings).context("--policy")?
        }
        // Offline there is always a cluster: the context given, or an empty one.
        None => Config::load_or_default(config.as_deref())?.with_cluster_builtins(),
    };

    let mut objects = Vec::new();
    for path in &manifests {
        objects.extend(read_objects(path)?);
    }
    let mut context_objects = Vec::new();
    for path in &context {
        context_objects.extend(read_objects(path)?);
    }
    // An evaluated object that cannot be a context object (no kind, no name)
    // gets its own, clearer error when it is evaluated.
    context_objects.extend(
        objects
            .iter()
            .filter(|(_, object)| crate::cluster::Offline::from_objects([object.clone()]).is_ok())
            .cloned(),
    );
    let cluster = manifests::context_objects(context_objects)?;
    let mut previous = HashMap::new();
    for path in &old {
        for (_, object) in read_objects(path)? {
            previous.insert(identity(&object), object);
        }
    }
    let registry = registry.registry(&cache)?;
    let engine = Engine::new(&cache.engine_options())?;
    let policies = load_policies(&engine, &registry, &config, &cluster)?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut denied = false;
    let mut reports = Vec::new();
    for (index, (origin, object)) in objects.into_iter().enumerate() {
        let old = previous.get(&identity(&object)).cloned();
        let uid = format!("stsguard-eval-{}", index + 1);
        let who = Requester {
            uid: &uid,
            username: "stsguard-eval",
            groups: &[],
            dry_run: true,
            field_manager: None,
        };
        let mut request = admission_request(&object, old, &who)
            .and_then(parse_request)
            .with_context(|| format!("{origin}: cannot evaluate this object"))?;
        let deadline = Instant::now() + config.request_timeout.max(Duration::from_secs(1));
        let decision = admission::decide(&mut request, &policies, Selection::All, deadline);
        denied |= !decision.response.allowed;
        if output != Output::Manifests {
            reports.push(DecisionReport::new(origin, &request, &decision));
            continue;
        }
        let described = format!("{origin}: {}", request.object_name());
        let response = decision.response;
        for warning in &response.warnings {
            eprintln!("warning: {described}: {warning}");
        }
        if let Some(status) = response.status.as_ref().filter(|_| !response.allowed) {
            eprintln!("denied: {described}: {}", status.message);
            continue;
        }
        // As the API server would store it: the policies' changes are in it.
        writeln!(out, "---").context("writing to stdout")?;
        serde_yaml::to_writer(&mut out, &request.object).context("writing to stdout")?;
    }
    match output {
        Output::Manifests => {}
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &serde_json::json!({"objects": reports}))
                .context("writing to stdout")?;
            writeln!(out).context("writing to stdout")?;
        }
        Output::Yaml => serde_yaml::to_writer(&mut out, &serde_json::json!({"objects": reports}))
            .context("writing to stdout")?,
    }
    out.flush().context("writing to stdout")?;
    Ok(if denied {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
