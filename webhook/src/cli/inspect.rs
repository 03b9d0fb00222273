//! `stsguard inspect`: what a `.wasm` file is before anyone serves it — the
//! contract version it was built against, what it imports and exports, its
//! size and digest, and (for a policy) its metadata and settings schema.
//!
//! A file that is no policy of this contract is still described — a waPC
//! (Kubewarden) module, a wasip1 program, a component of another world or
//! version — with what stsguard expects instead, and exits 1.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::CacheArgs;
use super::registry::RegistryArgs;
use crate::builtin;
use crate::config::ModuleSource;
use crate::engine::anatomy::{self, Anatomy};
use crate::engine::{Engine, Metadata};

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The component: a `.wasm` file, `builtin:NAME`, or an
    /// `oci://HOST/REPO:TAG` reference (pulled into the cache).
    module: ModuleSource,
    /// `text` for people, `json` for scripts.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Everything `inspect` found.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Inspection {
    module: String,
    size_bytes: usize,
    sha256: String,
    /// What the file is, in a few words.
    kind: String,
    /// The stsguard contract version it was built against, when it says.
    contract_version: Option<String>,
    /// The contract this stsguard serves.
    served_contract: &'static str,
    imports: Vec<String>,
    exports: Vec<String>,
    /// Why this stsguard cannot serve it; absent when it can.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Value>,
}

/// Exit 0 for a policy this stsguard serves, 1 for any other WebAssembly.
pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let InspectArgs {
        module,
        output,
        cache,
        registry,
    } = args;
    let mut pinned = None;
    let bytes = match &module {
        ModuleSource::Builtin(name) => builtin::module(name)
            .with_context(|| {
                format!(
                    "there is no built-in policy `{name}`; built-ins are: {}",
                    builtin::names().collect::<Vec<_>>().join(", ")
                )
            })?
            .to_vec(),
        ModuleSource::File(path) => {
            std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?
        }
        ModuleSource::Oci(reference) => {
            let pulled = super::registry::pull_one(&registry.registry(&cache)?, reference)?;
            pinned = Some(pulled.resolved.to_string());
            pulled.bytes.to_vec()
        }
    };
    let anatomy = Anatomy::read(&bytes).map_err(|e| anyhow::anyhow!("{module}: {e}"))?;
    let mut problem = anatomy.expect_policy().err();
    let mut metadata = None;
    if problem.is_none() {
        // Compiling is what proves the component links against this host; the
        // cache makes a second inspect (or the serve after it) fast.
        let engine = Engine::new(&cache.engine_options())?;
        match engine.load(&bytes) {
            Ok(module) => metadata = Some(metadata_json(module.metadata())),
            Err(error) => problem = Some(error.to_string()),
        }
    }
    let inspection = Inspection {
        module: pinned.unwrap_or_else(|| module.to_string()),
        size_bytes: bytes.len(),
        sha256: crate::engine::hex(&Sha256::digest(&bytes)),
        kind: anatomy.describe(),
        contract_version: anatomy.contract_version().map(str::to_string),
        served_contract: stsguard_contract::WIT_PACKAGE,
        imports: anatomy.imports().to_vec(),
        exports: anatomy.exports().to_vec(),
        problem,
        metadata,
    };
    let servable = inspection.problem.is_none();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &inspection)?;
            writeln!(out)?;
        }
        Output::Text => write_text(&mut out, &inspection)?,
    }
    Ok(if servable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn metadata_json(metadata: &Metadata) -> Value {
    let schema: Value = serde_json::from_str(&metadata.settings_schema)
        .unwrap_or(Value::String(metadata.settings_schema.clone()));
    json!({
        "name": metadata.name,
        "version": metadata.version,
        "description": metadata.description,
        "mutating": metadata.mutating,
        "targets": metadata.targets.iter().map(describe_target).collect::<Vec<_>>(),
        "reads": metadata.reads.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "settingsSchema": schema,
    })
}

/// The kinds a policy reads, and the grant a config needs for them.
pub fn reads_line(reads: &Value) -> String {
    let kinds: Vec<&str> = reads
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if kinds.is_empty() {
        return "nothing but the request".into();
    }
    let grants: Vec<String> = kinds
        .iter()
        .filter_map(|kind| kind.split_once(' '))
        .map(|(api_version, kind)| format!("{{apiVersion: {api_version}, kind: {kind}}}"))
        .collect();
    format!(
        "{} (grant in the policy's config entry: reads: [{}])",
        kinds.join(", "),
        grants.join(", ")
    )
}

/// `apps/v1 StatefulSet`; the core group as `core/v1`.
pub fn describe_target(target: &stsguard_contract::Target) -> String {
    let group = if target.group.is_empty() {
        "core"
    } else {
        &target.group
    };
    format!("{group}/{} {}", target.version, target.kind)
}

fn write_text(out: &mut impl Write, inspection: &Inspection) -> std::io::Result<()> {
    writeln!(out, "module:    {}", inspection.module)?;
    writeln!(out, "size:      {} bytes", inspection.size_bytes)?;
    writeln!(out, "sha256:    {}", inspection.sha256)?;
    writeln!(out, "kind:      {}", inspection.kind)?;
    writeln!(
        out,
        "contract:  {} (this stsguard serves {}; world `policy` exports {})",
        inspection
            .contract_version
            .as_deref()
            .map_or("not named by its imports".to_string(), |v| format!(
                "stsguard:policy@{v}"
            )),
        inspection.served_contract,
        anatomy::POLICY_EXPORTS.join(", "),
    )?;
    writeln!(out, "imports:   {}", list(&inspection.imports))?;
    writeln!(out, "exports:   {}", list(&inspection.exports))?;
    if let Some(problem) = &inspection.problem {
        writeln!(out, "\nnot servable: {problem}")?;
    }
    if let Some(metadata) = &inspection.metadata {
        writeln!(
            out,
            "\npolicy:      {} {}",
            metadata["name"].as_str().unwrap_or(""),
            metadata["version"].as_str().unwrap_or("")
        )?;
        writeln!(
            out,
            "description: {}",
            metadata["description"].as_str().unwrap_or("")
        )?;
        writeln!(out, "mutating:    {}", metadata["mutating"])?;
        let targets: Vec<&str> = metadata["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        writeln!(out, "applies to:  {}", targets.join(", "))?;
        writeln!(out, "reads:       {}", reads_line(&metadata["reads"]))?;
        writeln!(out, "settings (JSON Schema):")?;
        let schema = serde_json::to_string_pretty(&metadata["settingsSchema"]).unwrap_or_default();
        for line in schema.lines() {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
