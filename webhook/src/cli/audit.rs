//! `stsguard audit`: the policy chain on the StatefulSets a cluster already has
//! (see [`crate::audit`]), one line or record per object, and an exit code for
//! scripts: 0 when every object is compliant, 1 when one is not (or
//! `--findings-exit-code`), 2 when the audit could not run or could not finish.
//!
//! The output is written as the pages come in — a table row, a JSON line, a
//! YAML list item per object — so tens of thousands of objects need no more
//! memory than one page. A run that stopped early says `INCOMPLETE` (table) or
//! `complete: false` with the error (JSON, YAML), and exits 2.
//!
//! With `--write-reports`, once the run is complete and printed, one
//! PolicyReport per namespace is applied ([`crate::audit::policy_report`]); a
//! run that is not complete writes none, and a report the API server refuses
//! is an error (exit 2) after the results are printed.

use std::collections::HashMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

use super::CacheArgs;
use super::outcome::{DecisionReport, PolicyReport};
use super::registry::{RegistryArgs, load_policies};
use crate::audit::{self, Auditor, Evaluation, Finding, Lister, Reports, Scope, Writer};
use crate::chain::{ModuleIdentity, PolicySet};
use crate::cluster::{self, Cluster};
use crate::config::{Config, FailurePolicy, Mode};
use crate::engine::{ClusterReader, Engine};

mod watch;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Config file with the policy chain [default: the built-in policies].
    #[arg(long, env = "STSGUARD_CONFIG")]
    config: Option<PathBuf>,
    /// Namespace to audit [default: the kubeconfig context's namespace, or the
    /// service account's in a pod, like kubectl].
    #[arg(short, long, env = "STSGUARD_AUDIT_NAMESPACE")]
    namespace: Option<String>,
    /// Audit the StatefulSets of every namespace (needs `list` on
    /// statefulsets.apps cluster-wide).
    #[arg(
        short = 'A',
        long,
        env = "STSGUARD_AUDIT_ALL_NAMESPACES",
        conflicts_with = "namespace"
    )]
    all_namespaces: bool,
    /// Only the StatefulSets whose labels match this selector (`app=web,tier!=db`).
    /// Those labelled `stsguard.io/ignore: "true"` are always skipped, as the
    /// webhook skips them.
    #[arg(short = 'l', long, env = "STSGUARD_AUDIT_SELECTOR")]
    selector: Option<String>,
    /// What to print: a `table` (one line per object, then a summary), or one
    /// document with `complete`, `summary`, the chain's `policies` (with their
    /// modules' sha256) and `results` (per object the finding, each policy's
    /// outcome, the warnings and the patch), as `json` or `yaml`.
    #[arg(short, long, env = "STSGUARD_AUDIT_OUTPUT", value_enum, default_value_t = Output::Table)]
    output: Output,
    /// After a complete run, write one `wgpolicyk8s.io/v1alpha2` PolicyReport
    /// per namespace audited (`stsguard-audit`, replacing the previous run's),
    /// with a result per object and policy. Needs the PolicyReport CRD and
    /// `create, patch` on policyreports.wgpolicyk8s.io; not with --selector (a
    /// report of some objects would replace the report of all). A run that does
    /// not complete writes none.
    #[arg(
        long,
        env = "STSGUARD_AUDIT_WRITE_REPORTS",
        conflicts_with = "selector"
    )]
    write_reports: bool,
    /// The exit code when an object is not compliant. A scheduled audit that
    /// writes reports sets 0, so that findings (in the reports) do not fail its
    /// Job; 2 (could not run) stays 2.
    #[arg(
        long,
        env = "STSGUARD_AUDIT_FINDINGS_EXIT_CODE",
        default_value_t = 1,
        value_name = "CODE"
    )]
    findings_exit_code: u8,
    /// Keep auditing: watch the StatefulSets and, with --write-reports, keep
    /// each namespace's report current within --report-interval of a change.
    /// Runs until SIGTERM; logs one line per object that is not compliant.
    #[arg(long, env = "STSGUARD_AUDIT_WATCH")]
    watch: bool,
    /// With --watch: how often the reports of changed namespaces are written.
    #[arg(long, env = "STSGUARD_AUDIT_REPORT_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration, requires = "watch")]
    report_interval: Duration,
    /// With --watch: serve /metrics (objects by finding, evaluations, report
    /// writes, watch errors, the last full list's duration, the last time every
    /// report was current), /healthz and /readyz over plain HTTP here.
    #[arg(long, env = "STSGUARD_AUDIT_METRICS_LISTEN", requires = "watch")]
    metrics_listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// How long the audit waits for the first list of each kind its policies read.
const CLUSTER_SYNC_TIMEOUT: std::time::Duration = crate::cluster::DEFAULT_SYNC_TIMEOUT;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

/// How an audit that ran came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Compliant,
    NotCompliant,
    Incomplete,
    /// The audit ran, but its PolicyReports could not all be written.
    ReportsFailed,
}

impl Verdict {
    fn exit_code(self) -> ExitCode {
        match self {
            Self::Compliant => ExitCode::SUCCESS,
            Self::NotCompliant => ExitCode::from(1),
            Self::Incomplete | Self::ReportsFailed => ExitCode::from(2),
        }
    }
}

pub fn run(args: AuditArgs) -> ExitCode {
    let findings_exit_code = args.findings_exit_code;
    match start(args) {
        Ok(Verdict::NotCompliant) => ExitCode::from(findings_exit_code),
        Ok(verdict) => verdict.exit_code(),
        Err(error) => {
            eprintln!("stsguard audit: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn start(args: AuditArgs) -> anyhow::Result<Verdict> {
    let AuditArgs {
        config,
        namespace,
        all_namespaces,
        selector,
        output,
        write_reports,
        findings_exit_code: _, // `run` applies it
        watch,
        report_interval,
        metrics_listen,
        cache,
        registry,
    } = args;
    // The audit reads the live cluster: the default chain includes the
    // built-ins that read it.
    let config = Config::load_or_default(config.as_deref())?.with_cluster_builtins();
    let registry = registry.registry(&cache)?;
    let engine = Engine::new(&cache.engine_options())?;
    // A watch evaluates on the runtime's threads while /metrics must answer: two.
    let runtime = if watch {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .context("could not start the async runtime")?;
    let client = runtime.block_on(kube::Client::try_default()).map_err(|error| {
        anyhow::anyhow!(
            "could not make a Kubernetes client from the kubeconfig ($KUBECONFIG, ~/.kube/config) or the pod's service account: {}",
            crate::errors::describe_error(&error)
        )
    })?;
    // The policies read the cluster as the server's do: from watch-backed
    // caches of the kinds they are granted, filled before the first object is
    // evaluated (and, with --watch, kept current).
    let cluster = Cluster::new(client.clone(), CLUSTER_SYNC_TIMEOUT);
    let reader: Arc<dyn ClusterReader> = cluster.clone();
    let policies = load_policies(&engine, &registry, &config, &reader)?;
    runtime.block_on(async {
        let kinds = policies.kinds_read();
        cluster.watch(&kinds);
        if !cluster.wait_settled(&kinds, CLUSTER_SYNC_TIMEOUT).await
            || cluster
                .status()
                .iter()
                .any(|s| s.phase != cluster::Phase::Synced)
        {
            eprintln!(
                "stsguard audit: not every kind the policies read could be listed; their reads \
                 fail, and so do those policies' evaluations:\n{}",
                cluster.describe()
            );
        }
        let scope = match (all_namespaces, namespace) {
            (true, _) => Scope::All,
            (false, Some(namespace)) => Scope::Namespace(namespace),
            (false, None) => Scope::Namespace(client.default_namespace().to_string()),
        };
        let writer = write_reports.then(|| Writer::new(client.clone()));
        let auditor = Auditor {
            policies: &policies,
            timeout: config.request_timeout,
        };
        if watch {
            let options = audit::WatchOptions {
                scope,
                report_interval,
                selector,
                context: (!policies.kinds_read().is_empty()).then(|| cluster.changes()),
            };
            watch::run(client, auditor, writer, options, metrics_listen).await?;
            return Ok(Verdict::Compliant);
        }
        let lister = Lister::new(client, scope, selector);
        let stdout = std::io::stdout();
        report(lister, auditor, output, writer, &mut stdout.lock()).await
    })
}

/// Audits what `lister` lists and writes the report to `out` as it goes; then,
/// with a `writer` and a complete run, the PolicyReports.
async fn report(
    mut lister: Lister,
    auditor: Auditor<'_>,
    output: Output,
    writer: Option<Writer>,
    out: &mut dyn Write,
) -> anyhow::Result<Verdict> {
    let started = Instant::now();
    let mut report = Report::new(output, auditor.policies, out);
    if writer.is_some() {
        let mut reports = Reports::new(report.modules.clone());
        if let Scope::Namespace(namespace) = lister.scope() {
            reports.expect(namespace);
        }
        report.policy_reports = Some(reports);
    }
    let completion = audit::run(&mut lister, auditor, |evaluation| report.record(evaluation)).await;
    if completion.pages == 0
        && let Some(error) = completion.interrupted
    {
        // Nothing was listed: an error like any other, no report.
        return Err(error.into());
    }
    let interrupted = completion.interrupted.as_ref().map(ToString::to_string);
    let finished = report.finish(started.elapsed(), interrupted.as_deref());
    if writer.is_some() && !completion.is_complete() {
        eprintln!(
            "stsguard audit: no PolicyReports written: the run did not complete, and a report of part of a namespace would replace the complete one"
        );
    }
    finished?;
    if let Some(error) = interrupted {
        eprintln!(
            "stsguard audit: INCOMPLETE: stopped after {} StatefulSets: {error}",
            completion.objects
        );
        return Ok(Verdict::Incomplete);
    }
    if completion.stopped {
        // Only a failed write stops the run, and `finish` reported that.
        return Ok(Verdict::Incomplete);
    }
    if let (Some(writer), Some(reports)) = (writer, report.policy_reports.take())
        && !write_reports(&writer, reports).await
    {
        return Ok(Verdict::ReportsFailed);
    }
    Ok(if report.counts.not_compliant() == 0 {
        Verdict::Compliant
    } else {
        Verdict::NotCompliant
    })
}

/// Applies every report, saying on stderr what was written and what was not;
/// whether all were.
async fn write_reports(writer: &Writer, reports: Reports) -> bool {
    let reports = reports.into_reports();
    let mut written = Vec::new();
    let mut failed = 0;
    for report in &reports {
        match writer.apply(report).await {
            Ok(()) => written.push(report.namespace()),
            Err(error) => {
                failed += 1;
                eprintln!("stsguard audit: {error}");
                if error.applies_to_all() {
                    break;
                }
            }
        }
    }
    let all = failed == 0 && written.len() == reports.len();
    if !written.is_empty() || !all {
        eprintln!(
            "stsguard audit: wrote {} of {} PolicyReports ({} in {}){}",
            written.len(),
            reports.len(),
            audit::policy_report::NAME,
            if written.is_empty() {
                "no namespace".to_string()
            } else {
                written.join(", ")
            },
            if all {
                ""
            } else {
                "; the audit's results are above"
            },
        );
    }
    all
}

/// Objects by finding.
#[derive(Debug, Default, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct Counts {
    objects: usize,
    compliant: usize,
    would_mutate: usize,
    would_deny: usize,
    error: usize,
}

impl Counts {
    fn add(&mut self, finding: &Finding) {
        self.objects += 1;
        match finding {
            Finding::Compliant => self.compliant += 1,
            Finding::WouldMutate { .. } => self.would_mutate += 1,
            Finding::WouldDeny { .. } => self.would_deny += 1,
            Finding::Error { .. } => self.error += 1,
        }
    }

    fn not_compliant(&self) -> usize {
        self.objects - self.compliant
    }
}

/// One policy of the chain the audit ran.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ChainPolicy {
    name: String,
    module: String,
    mode: &'static str,
    failure_policy: &'static str,
    sha256: String,
}

/// One object, as the JSON and YAML reports have it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Record<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
    result: &'static str,
    /// would-mutate: the JSON pointers that would change.
    #[serde(skip_serializing_if = "Option::is_none")]
    paths: Option<&'a [String]>,
    /// would-deny: the denial; error: what failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    decision: Option<Decided>,
}

/// A [`DecisionReport`]'s fields, without the mutated object (the patch says
/// what would change) and with each policy's module digest.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Decided {
    operation: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    warnings: Vec<String>,
    patch: Value,
    policies: Vec<PolicyRecord>,
}

#[derive(Debug, Serialize)]
struct PolicyRecord {
    #[serde(flatten)]
    report: PolicyReport,
    sha256: String,
}

#[derive(Debug, Serialize)]
struct Opening<'a> {
    policies: &'a [ChainPolicy],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Closing<'a> {
    summary: Summary,
    complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    #[serde(flatten)]
    counts: Counts,
    duration_seconds: f64,
}

const TABLE_WIDTHS: [usize; 3] = [20, 32, 13];

/// The report being written: its opening once the first page is in, a row or
/// record per object, then the summary and whether the run is complete.
struct Report<'a> {
    output: Output,
    chain: Vec<ChainPolicy>,
    modules: HashMap<String, ModuleIdentity>,
    out: &'a mut dyn Write,
    opened: bool,
    counts: Counts,
    /// With --write-reports: the results by namespace, until the run ends.
    policy_reports: Option<Reports>,
    /// The first write that failed: the run stops there.
    write_error: Option<std::io::Error>,
}

impl<'a> Report<'a> {
    fn new(output: Output, policies: &PolicySet, out: &'a mut dyn Write) -> Self {
        let chain: Vec<ChainPolicy> = policies
            .policies()
            .iter()
            .map(|policy| ChainPolicy {
                name: policy.name().to_string(),
                module: policy.config.module.to_string(),
                mode: match policy.config.mode {
                    Mode::Enforce => "enforce",
                    Mode::Monitor => "monitor",
                },
                failure_policy: match policy.config.failure_policy {
                    FailurePolicy::Fail => "fail",
                    FailurePolicy::Ignore => "ignore",
                },
                sha256: policy.digest(),
            })
            .collect();
        let modules = policies.modules();
        Self {
            output,
            chain,
            modules,
            out,
            opened: false,
            counts: Counts::default(),
            policy_reports: None,
            write_error: None,
        }
    }

    fn record(&mut self, evaluation: Evaluation) -> ControlFlow<()> {
        self.counts.add(&evaluation.finding);
        if let Some(reports) = &mut self.policy_reports {
            reports.add(&evaluation);
        }
        match self.write_record(&evaluation) {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => {
                self.write_error = Some(error);
                ControlFlow::Break(())
            }
        }
    }

    fn open(&mut self) -> std::io::Result<()> {
        if std::mem::replace(&mut self.opened, true) {
            return Ok(());
        }
        match self.output {
            Output::Table => {
                let [ns, name, result] = TABLE_WIDTHS;
                writeln!(
                    self.out,
                    "{:<ns$} {:<name$} {:<result$} POLICIES/DETAIL",
                    "NAMESPACE", "NAME", "RESULT"
                )
            }
            Output::Json => {
                let policies = serde_json::to_string(&self.chain)?;
                write!(self.out, "{{\"policies\":{policies},\n\"results\":[")
            }
            Output::Yaml => {
                let opening = serde_yaml::to_string(&Opening {
                    policies: &self.chain,
                })
                .map_err(std::io::Error::other)?;
                write!(self.out, "{opening}results:")
            }
        }
    }

    fn write_record(&mut self, evaluation: &Evaluation) -> std::io::Result<()> {
        let first = !self.opened;
        self.open()?;
        let Evaluation {
            target,
            decided,
            finding,
        } = evaluation;
        if self.output == Output::Table {
            let [ns, name, result] = TABLE_WIDTHS;
            let detail = match finding {
                Finding::Compliant => decided
                    .as_ref()
                    .map(|(_, decision)| {
                        let names: Vec<&str> = decision
                            .outcome
                            .runs
                            .iter()
                            .map(|run| &*run.policy)
                            .collect();
                        if names.is_empty() {
                            "no policy applies".to_string()
                        } else {
                            names.join(", ")
                        }
                    })
                    .unwrap_or_default(),
                Finding::WouldMutate { .. } => {
                    let by: Vec<&str> = decided
                        .iter()
                        .flat_map(|(_, decision)| &decision.outcome.runs)
                        .filter(|run| {
                            matches!(
                                run.result,
                                crate::chain::RunResult::Allowed { mutated: true }
                            ) || !run.warnings.is_empty()
                        })
                        .map(|run| &*run.policy)
                        .collect();
                    format!("{}: {}", by.join(", "), finding.summary())
                }
                Finding::WouldDeny { .. } | Finding::Error { .. } => finding.summary(),
            };
            return writeln!(
                self.out,
                "{:<ns$} {:<name$} {:<result$} {}",
                target.namespace,
                target.name,
                finding.label(),
                detail.replace('\n', " ")
            );
        }
        let record = Record {
            namespace: &target.namespace,
            name: &target.name,
            uid: &target.uid,
            result: finding.label(),
            paths: match finding {
                Finding::WouldMutate { paths, .. } => Some(paths),
                _ => None,
            },
            detail: match finding {
                Finding::WouldDeny { message } | Finding::Error { message } => Some(message),
                _ => None,
            },
            decision: decided.as_ref().map(|(request, decision)| {
                let DecisionReport {
                    operation,
                    allowed,
                    message,
                    warnings,
                    patch,
                    policies,
                    ..
                } = DecisionReport::new(String::new(), request, decision);
                Decided {
                    operation,
                    allowed,
                    message,
                    warnings,
                    patch,
                    policies: policies
                        .into_iter()
                        .map(|report| PolicyRecord {
                            sha256: self
                                .modules
                                .get(&report.name)
                                .map(|m| m.sha256.clone())
                                .unwrap_or_default(),
                            report,
                        })
                        .collect(),
                }
            }),
        };
        match self.output {
            Output::Table => unreachable!("written above"),
            Output::Json => {
                let separator = if first { "\n" } else { ",\n" };
                let line = serde_json::to_string(&record)?;
                write!(self.out, "{separator}{line}")
            }
            Output::Yaml => {
                let item = serde_yaml::to_string(&[record]).map_err(std::io::Error::other)?;
                write!(self.out, "{}{item}", if first { "\n" } else { "" })
            }
        }
    }

    /// The summary, and whether the run is complete; reports a failed write.
    fn finish(&mut self, elapsed: Duration, interrupted: Option<&str>) -> anyhow::Result<()> {
        if let Some(error) = self.write_error.take() {
            anyhow::bail!("could not write the report: {error}");
        }
        let first = !self.opened;
        self.write_closing(first, elapsed, interrupted)
            .and_then(|()| self.out.flush())
            .context("could not write the report")
    }

    fn write_closing(
        &mut self,
        empty: bool,
        elapsed: Duration,
        interrupted: Option<&str>,
    ) -> std::io::Result<()> {
        self.open()?;
        let counts = self.counts;
        match self.output {
            Output::Table => {
                if let Some(error) = interrupted {
                    writeln!(
                        self.out,
                        "INCOMPLETE: the audit stopped after {} StatefulSets, the list was not read to its end: {error}",
                        counts.objects
                    )?;
                }
                let chain: Vec<String> = self
                    .chain
                    .iter()
                    .map(|policy| format!("{} (sha256 {})", policy.name, &policy.sha256[..12]))
                    .collect();
                writeln!(
                    self.out,
                    "{}{} StatefulSets in {:.1?}: {} compliant, {} would-mutate, {} would-deny, {} error; policies: {}",
                    if interrupted.is_some() {
                        "INCOMPLETE: "
                    } else {
                        ""
                    },
                    counts.objects,
                    elapsed,
                    counts.compliant,
                    counts.would_mutate,
                    counts.would_deny,
                    counts.error,
                    chain.join(", ")
                )
            }
            Output::Json => {
                let closing = serde_json::to_string(&self.closing(elapsed, interrupted))?;
                // `{"summary":...}` without its braces, after the results.
                let members = &closing[1..closing.len() - 1];
                let end = if empty { "" } else { "\n" };
                writeln!(self.out, "{end}],\n{members}}}")
            }
            Output::Yaml => {
                let closing = serde_yaml::to_string(&self.closing(elapsed, interrupted))
                    .map_err(std::io::Error::other)?;
                let results = if empty { " []\n" } else { "" };
                write!(self.out, "{results}{closing}")
            }
        }
    }

    fn closing<'e>(&self, elapsed: Duration, interrupted: Option<&'e str>) -> Closing<'e> {
        Closing {
            summary: Summary {
                counts: self.counts,
                duration_seconds: elapsed.as_secs_f64(),
            },
            complete: interrupted.is_none(),
            error: interrupted,
        }
    }
}

#[cfg(test)]
mod tests;
