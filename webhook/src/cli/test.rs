//! `stsguard test`: declarative test suites for policies, run through the real
//! engine — the same load, settings check and chain as `serve`.
//!
//! A suite (`tests.yaml`, or any `*.tests.yaml`) names a chain and its cases;
//! see `suite` for the format and `policies/README.md` for a guide. Output
//! for people, `-o json`, or `-o junit` for CI. Exit 0 when every case passed,
//! 1 when one failed, 2 when a suite could not run (a syntax error, a missing
//! file, a module that does not load).

mod expect;
mod junit;
mod suite;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use super::CacheArgs;
use super::manifests::{self, parse_request};
use super::outcome::DecisionReport;
use super::registry::{RegistryArgs, pull_blocking};
use crate::admission;
use crate::chain::{LoadError, PolicySet, Selection};
use crate::cluster::Offline;
use crate::config::Config;
use crate::engine::{ClusterReader, Engine};
use crate::registry::Registry;
use stsguard_contract::cluster::{ReadError, ResourceKind, Selector};
use suite::{Case, Suite};

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Suite files, or folders searched for `tests.yaml` and `*.tests.yaml`
    /// (skipping hidden folders, node_modules, target and build).
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// `text` for people; `json` (every decision, as `eval -o json` prints
    /// it); `junit` (XML for CI test reports).
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
    Junit,
}

/// How one suite went.
#[derive(Debug, Serialize)]
pub struct SuiteResult {
    path: PathBuf,
    /// Why the suite could not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    cases: Vec<CaseResult>,
    seconds: f64,
}

impl SuiteResult {
    fn failed(&self) -> usize {
        self.cases
            .iter()
            .filter(|case| !case.failures.is_empty())
            .count()
    }
}

/// How one case went: passed when `failures` is empty.
#[derive(Debug, Serialize)]
pub struct CaseResult {
    name: String,
    failures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<DecisionReport>,
    seconds: f64,
}

/// Exit 0 when every case passed, 1 when one failed, 2 when a suite could not run.
pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let TestArgs {
        paths,
        output,
        cache,
        registry,
    } = args;
    let mut files = Vec::new();
    for path in &paths {
        files.extend(discover(path)?);
    }
    let registry = registry.registry(&cache)?;
    let engine = Engine::new(&cache.engine_options())?;
    let results: Vec<SuiteResult> = files
        .iter()
        .map(|file| run_suite(&engine, &registry, file))
        .collect();

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match output {
        Output::Text => write_text(&mut out, &results)?,
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &serde_json::json!({"suites": results}))?;
            writeln!(out)?;
        }
        Output::Junit => out.write_all(junit::render(&results).as_bytes())?,
    }
    out.flush()?;
    Ok(if results.iter().any(|suite| suite.error.is_some()) {
        ExitCode::from(2)
    } else if results.iter().any(|suite| suite.failed() > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The suite files `path` names: itself, or those under a folder, sorted.
fn discover(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("could not read {}", path.display()))?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    let mut folders = vec![path.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder)
            .with_context(|| format!("could not read {}", folder.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("could not read {}", folder.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir() {
                let skipped = name.starts_with('.')
                    || matches!(name.as_str(), "node_modules" | "target" | "build");
                if !skipped {
                    folders.push(path);
                }
            } else if name == "tests.yaml" || name.ends_with(".tests.yaml") {
                found.push(path);
            }
        }
    }
    found.sort();
    if found.is_empty() {
        anyhow::bail!(
            "found no test suite under {} (files named tests.yaml or *.tests.yaml); `stsguard \
             new` writes one",
            path.display()
        );
    }
    Ok(found)
}

fn run_suite(engine: &Engine, registry: &Registry, path: &Path) -> SuiteResult {
    let started = Instant::now();
    let result = |error, cases| SuiteResult {
        path: path.to_path_buf(),
        error,
        cases,
        seconds: started.elapsed().as_secs_f64(),
    };
    let suite = match Suite::load(path) {
        Ok(suite) => suite,
        Err(error) => return result(Some(format!("{error:#}")), Vec::new()),
    };
    let pulled = match pull_blocking(registry, &suite.config) {
        Ok(pulled) => pulled,
        Err(error) => return result(Some(format!("{}: {error:#}", path.display())), Vec::new()),
    };
    // One chain for the whole suite, its reads answered from each case's
    // context in turn (cases run one after another).
    let context = Arc::new(CaseContext::default());
    let reader: Arc<dyn ClusterReader> = context.clone();
    let policies = match PolicySet::load_pulled(engine, &suite.config, &pulled, Some(&reader)) {
        Ok(policies) => policies,
        Err(error) => {
            return result(
                Some(format!(
                    "{}: the policies did not load: {error}",
                    path.display()
                )),
                Vec::new(),
            );
        }
    };
    // A chain per distinct settings override, loaded once: modules compile
    // once per process, the settings check runs per chain.
    let mut chains: HashMap<String, Result<PolicySet, LoadError>> = HashMap::new();
    let cases = suite
        .cases
        .iter()
        .map(|case| {
            let started = Instant::now();
            let chain = match &case.settings {
                None => Ok(&policies),
                Some(settings) => chains
                    .entry(settings.to_string())
                    .or_insert_with(|| {
                        PolicySet::load_pulled(
                            engine,
                            &suite.config_with(settings),
                            &pulled,
                            Some(&reader),
                        )
                    })
                    .as_ref(),
            };
            let (failures, decision) = match context.set(&case.context) {
                Ok(()) => run_case(&suite.config, chain, case),
                Err(error) => (vec![format!("{error:#}")], None),
            };
            CaseResult {
                name: case.name.clone(),
                failures,
                decision,
                seconds: started.elapsed().as_secs_f64(),
            }
        })
        .collect();
    result(None, cases)
}

/// The cluster a case's policies read: its context, swapped in before it runs.
#[derive(Default)]
struct CaseContext(RwLock<Option<Arc<dyn ClusterReader>>>);

impl CaseContext {
    fn set(&self, objects: &[(String, Value)]) -> anyhow::Result<()> {
        let reader = manifests::context_objects(objects.to_vec())?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(reader);
        Ok(())
    }

    fn reader(&self) -> Arc<dyn ClusterReader> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| Offline::empty().reader())
    }
}

impl ClusterReader for CaseContext {
    fn get(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Arc<str>>, ReadError> {
        self.reader().get(kind, namespace, name)
    }

    fn list(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        selector: &Selector,
        max_bytes: usize,
    ) -> Result<String, ReadError> {
        self.reader().list(kind, namespace, selector, max_bytes)
    }
}

fn run_case(
    config: &Config,
    chain: Result<&PolicySet, &LoadError>,
    case: &Case,
) -> (Vec<String>, Option<DecisionReport>) {
    let policies = match (chain, &case.expect.settings_rejected) {
        (Ok(policies), None) => policies,
        (Ok(_), Some(wanted)) => {
            return (
                vec![format!(
                    "expected the settings to be rejected with {wanted:?}, but they were accepted"
                )],
                None,
            );
        }
        (Err(error), Some(wanted)) if error.to_string().contains(wanted.as_str()) => {
            return (Vec::new(), None);
        }
        (Err(error), wanted) => {
            let expected = wanted
                .as_ref()
                .map(|w| format!(" (expected a rejection containing {w:?})"))
                .unwrap_or_default();
            return (
                vec![format!("the policies did not load: {error}{expected}")],
                None,
            );
        }
    };
    let decide = |request: &Value| -> Result<(DecisionReport, Value), String> {
        let mut parsed = parse_request(request.clone()).map_err(|e| format!("{e:#}"))?;
        let deadline = Instant::now() + config.request_timeout.max(Duration::from_secs(1));
        let decision = admission::decide(&mut parsed, policies, Selection::All, deadline);
        let object = request["object"].clone();
        Ok((
            DecisionReport::new(case.name.clone(), &parsed, &decision),
            object,
        ))
    };
    let (report, object) = match decide(&case.request) {
        Ok(decided) => decided,
        Err(error) => return (vec![format!("not a valid AdmissionRequest: {error}")], None),
    };
    // Run again on its own output, when it changed the object.
    let again = match &report.mutated {
        Some(mutated) if mutated != &object && case.expect.idempotent != Some(false) => {
            let mut request = case.request.clone();
            request["object"] = mutated.clone();
            decide(&request).ok().map(|(again, _)| again)
        }
        _ => None,
    };
    let failures = expect::differences(&case.expect, &report, again.as_ref());
    (failures, Some(report))
}

fn write_text(out: &mut impl Write, results: &[SuiteResult]) -> std::io::Result<()> {
    let (mut passed, mut failed, mut errors) = (0, 0, 0);
    for suite in results {
        let path = suite.path.display();
        if let Some(error) = &suite.error {
            errors += 1;
            writeln!(out, "ERROR {error}")?;
            continue;
        }
        for case in &suite.cases {
            let ms = case.seconds * 1e3;
            if case.failures.is_empty() {
                passed += 1;
                writeln!(out, "PASS  {path}: {} ({ms:.1} ms)", case.name)?;
            } else {
                failed += 1;
                writeln!(out, "FAIL  {path}: {} ({ms:.1} ms)", case.name)?;
                for failure in &case.failures {
                    writeln!(out, "        {failure}")?;
                }
            }
        }
    }
    writeln!(
        out,
        "\n{} case(s): {passed} passed, {failed} failed; {} suite(s), {errors} could not run",
        passed + failed,
        results.len()
    )
}
