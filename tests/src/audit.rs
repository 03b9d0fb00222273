//! `stsguard audit` run as a process against the cluster under test, and the
//! PolicyReports it writes.
//!
//! The audit needs the PolicyReport CRD (`policyreports.wgpolicyk8s.io`): in-cluster
//! the chart's crds/ brought it; a cluster without it gets the chart's CRD file,
//! which is left in place afterwards (a CRD is cluster-wide, and deleting it would
//! delete every tool's reports).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::Value;

use crate::cluster::stsguard_bin;

/// The CRD the chart installs, as the audit writes to it.
const CRD: &str =
    include_str!("../../deploy/charts/stsguard/crds/policyreports.wgpolicyk8s.io.yaml");
const CRD_NAME: &str = "policyreports.wgpolicyk8s.io";
/// The report's name in each namespace.
pub const REPORT: &str = "stsguard-audit";

/// What one `stsguard audit` run came to.
#[derive(Debug)]
pub struct AuditRun {
    pub code: Option<i32>,
    /// The `-o json` document.
    pub document: Value,
    pub stderr: String,
}

impl AuditRun {
    /// The finding (`compliant`, `would-mutate`, ...) of each object, by name, in order.
    pub fn findings(&self) -> Vec<(String, String)> {
        self.document["results"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|record| {
                let text = |key: &str| record[key].as_str().unwrap_or_default().to_string();
                (text("name"), text("result"))
            })
            .collect()
    }

    /// The record of the object `name`.
    pub fn record(&self, name: &str) -> Option<&Value> {
        self.document["results"]
            .as_array()?
            .iter()
            .find(|record| record["name"] == name)
    }
}

/// The policies the classic audit scenarios run: the three built-ins that read
/// nothing but the StatefulSet, so that what they expect does not depend on
/// which Services or StorageClasses the cluster has.
pub const OBJECT_ONLY_POLICIES: &str = "policies:
  - {name: probes, module: \"builtin:probes\"}
  - {name: parallel, module: \"builtin:parallel\"}
  - {name: volume-claims, module: \"builtin:volume-claims\"}
";

/// A config file with `yaml` for the length of a run.
fn config_file(yaml: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile()?;
    std::fs::write(file.path(), yaml)?;
    Ok(file)
}

/// Runs `stsguard audit --namespace NAMESPACE -o json --write-reports --config`
/// with `config` (YAML) and the suite's kubeconfig (the process inherits
/// `KUBECONFIG`).
pub fn audit_writing_reports(namespace: &str, config: &str) -> anyhow::Result<AuditRun> {
    let config = config_file(config)?;
    let output = Command::new(stsguard_bin()?)
        .args([
            "audit",
            "--namespace",
            namespace,
            "-o",
            "json",
            "--write-reports",
        ])
        .arg("--config")
        .arg(config.path())
        .output()
        .context("running stsguard audit")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let document = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "stsguard audit (exit {:?}) printed no JSON document:\n{stdout}\nstderr:\n{stderr}",
            output.status.code()
        )
    })?;
    Ok(AuditRun {
        code: output.status.code(),
        document,
        stderr,
    })
}

/// `stsguard audit --watch --namespace NAMESPACE --write-reports` running in the
/// background (reports every 250 ms); stopped when dropped.
pub struct WatchingAudit {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
    _config: tempfile::NamedTempFile,
}

impl WatchingAudit {
    /// With the policies of `config` (YAML).
    pub fn start(namespace: &str, config: &str) -> anyhow::Result<Self> {
        let log = tempfile::NamedTempFile::new()?;
        let config = config_file(config)?;
        let child = Command::new(stsguard_bin()?)
            .args([
                "audit",
                "--namespace",
                namespace,
                "--write-reports",
                "--watch",
                "--report-interval",
                "250ms",
                "--log",
                "info",
            ])
            .arg("--config")
            .arg(config.path())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen()?)
            .spawn()
            .context("starting stsguard audit --watch")?;
        Ok(Self {
            child,
            log,
            _config: config,
        })
    }

    /// What it logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Fails with the log if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("stsguard audit --watch exited ({status}):\n{}", self.log());
        }
        Ok(())
    }
}

impl Drop for WatchingAudit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes sure the PolicyReport CRD is installed and established, installing the
/// chart's when it is not.
pub async fn ensure_policy_report_crd(client: &Client) -> anyhow::Result<()> {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    if crds.get_opt(CRD_NAME).await?.is_none() {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(CRD).context("the chart's PolicyReport CRD")?;
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            // Installed by someone else meanwhile.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error).context("installing the PolicyReport CRD"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let crd = crds.get(CRD_NAME).await?;
        let established = crd
            .status
            .and_then(|status| status.conditions)
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the CRD {CRD_NAME} was not Established within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `stsguard-audit` PolicyReport of `namespace`, if there is one.
pub async fn policy_report(client: &Client, namespace: &str) -> anyhow::Result<Option<Value>> {
    let request = http::Request::get(format!(
        "/apis/wgpolicyk8s.io/v1alpha2/namespaces/{namespace}/policyreports/{REPORT}"
    ))
    .body(Vec::new())?;
    match client.request::<Value>(request).await {
        Ok(report) => Ok(Some(report)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(error).context("reading the PolicyReport"),
    }
}

/// A report's results as (object name, policy, result), in order.
pub fn report_results(report: &Value) -> Vec<(String, String, String)> {
    report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|result| {
            let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
            (
                text(&result["resources"][0]["name"]),
                text(&result["policy"]),
                text(&result["result"]),
            )
        })
        .collect()
}
