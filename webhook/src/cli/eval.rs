//! `stsguard eval`: the policy chain offline, on manifest files — the same
//! decisions the webhook would make, for CI pipelines and GitOps repositories.
//!
//! Each object becomes a dry-run AdmissionRequest: CREATE, or UPDATE when
//! `--old` holds an object of the same kind, namespace and name. Note that the
//! API server *defaults* objects before webhooks see them; manifests are
//! evaluated as written, and the built-in policies treat an absent field as its
//! default.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use super::CacheArgs;
use crate::admission;
use crate::chain::{PolicySet, Selection};
use crate::config::Config;
use crate::engine::Engine;
use crate::review::{self, ReviewRequest};
use stsguard_contract::request;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Config file with the policy chain [default: the built-in policies].
    #[arg(long, env = "STSGUARD_CONFIG")]
    config: Option<PathBuf>,
    /// Manifests of the objects as they are now: objects that match one (same
    /// kind, namespace and name) are evaluated as an UPDATE of it.
    #[arg(long, env = "STSGUARD_EVAL_OLD", value_delimiter = ',')]
    old: Vec<PathBuf>,
    /// Manifest files (YAML, multi-document, or JSON; `-` reads stdin).
    #[arg(
        required = true,
        env = "STSGUARD_EVAL_MANIFESTS",
        value_delimiter = ','
    )]
    manifests: Vec<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

pub fn run(args: EvalArgs) -> ExitCode {
    match evaluate(args) {
        Ok(Verdict::Allowed) => ExitCode::SUCCESS,
        Ok(Verdict::Denied) => ExitCode::from(1),
        Err(error) => {
            eprintln!("stsguard eval: {error:#}");
            ExitCode::from(2)
        }
    }
}

enum Verdict {
    Allowed,
    Denied,
}

fn evaluate(args: EvalArgs) -> anyhow::Result<Verdict> {
    let EvalArgs {
        config,
        old,
        manifests,
        cache,
    } = args;
    let config = Config::load_or_default(config.as_deref())?;
    let mut objects = Vec::new();
    for path in &manifests {
        objects.extend(read_objects(path)?);
    }
    let mut previous = HashMap::new();
    for path in &old {
        for (_, object) in read_objects(path)? {
            previous.insert(identity(&object), object);
        }
    }
    let engine = Engine::new(&cache.engine_options())?;
    let policies = PolicySet::load(&engine, &config)?;

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut denied = false;
    for (index, (origin, object)) in objects.into_iter().enumerate() {
        let old = previous.get(&identity(&object)).cloned();
        let request = review_request(index, &object, old)
            .with_context(|| format!("{origin}: cannot evaluate this object"))?;
        let described = format!("{origin}: {}", request.object_name());
        let deadline = Instant::now() + config.request_timeout.max(Duration::from_secs(1));
        let admission::Decision { response, outcome } =
            admission::decide(&request, &policies, Selection::All, deadline);
        for warning in &response.warnings {
            eprintln!("warning: {described}: {warning}");
        }
        if let Some(status) = response.status.as_ref().filter(|_| !response.allowed) {
            denied = true;
            eprintln!("denied: {described}: {}", status.message);
            continue;
        }
        let object = outcome.object.unwrap_or(object);
        writeln!(out, "---").context("writing to stdout")?;
        serde_yaml::to_writer(&mut out, &object).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    Ok(if denied {
        Verdict::Denied
    } else {
        Verdict::Allowed
    })
}

/// Every object in a manifest file, with where it came from. `List` objects are
/// unpacked; empty documents are skipped.
fn read_objects(path: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    let (name, text) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        ("stdin".to_string(), text)
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        (path.display().to_string(), text)
    };
    let mut objects = Vec::new();
    for (number, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(document).with_context(|| {
            format!("{name}: document {} is not valid YAML or JSON", number + 1)
        })?;
        let origin = format!("{name}#{}", number + 1);
        match value {
            Value::Null => {}
            Value::Object(_) if value["kind"] == "List" => {
                for item in value["items"].as_array().into_iter().flatten() {
                    objects.push((origin.clone(), item.clone()));
                }
            }
            Value::Object(_) => objects.push((origin, value)),
            _ => bail!("{origin} is not a Kubernetes object (a mapping with apiVersion and kind)"),
        }
    }
    Ok(objects)
}

/// Kind, namespace and name: how `--old` objects are matched.
fn identity(object: &Value) -> (String, String, String, String) {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    (
        text("/apiVersion"),
        text("/kind"),
        namespace,
        text("/metadata/name"),
    )
}

/// The AdmissionRequest the API server would send for this object (dry run).
fn review_request(
    index: usize,
    object: &Value,
    old: Option<Value>,
) -> anyhow::Result<ReviewRequest> {
    let named = |key: &str| object[key].as_str().is_some_and(|s| !s.is_empty());
    if !named("apiVersion") || !named("kind") {
        bail!("it has no apiVersion and kind");
    }
    let uid = format!("stsguard-eval-{}", index + 1);
    let who = request::Requester {
        uid: &uid,
        username: "stsguard-eval",
        groups: &[],
        dry_run: true,
        field_manager: None,
    };
    let review = json!({
        "apiVersion": review::API_VERSION,
        "kind": "AdmissionReview",
        "request": request::admission_request(object.clone(), old, Some("default"), &who),
    });
    review::parse(&serde_json::to_vec(&review)?).map_err(|e| anyhow::anyhow!(e.message))
}
