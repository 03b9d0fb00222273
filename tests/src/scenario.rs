//! A scenario: one test's temporary namespace, stsguard on its admission path, and the
//! clean-up of everything it created.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use crate::admission::{Admitted, Outcome, Submission, accepts, stsguard_warnings};
use crate::cleanup::{self, Created};
use crate::cluster::{Cluster, Mode};
use crate::fixtures::{self, Manifest};
use crate::webhook::{self, LocalWebhook};

/// The opt-out label of the chart's objectSelector.
pub const IGNORE_LABEL: &str = "stsguard.io/ignore";
/// Label on every namespace the suite creates.
pub const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "stsguard-e2e");
/// Label scoping an out-of-cluster webhook to one scenario's namespaces.
pub const RUN_LABEL: &str = "stsguard-e2e.io/run";

/// Which policy configuration the webhook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policies {
    /// The built-in policies in enforce mode (the chart's default).
    Enforce,
    /// The built-in policies in monitor mode.
    Monitor,
    /// This configuration (out-of-cluster only: an installed release has its own).
    Config(&'static str),
}

impl Policies {
    fn config(self) -> &'static str {
        match self {
            // No `policies` key: the built-ins, in enforce mode.
            Policies::Enforce => "requestTimeout: 8s\n",
            Policies::Config(config) => config,
            Policies::Monitor => concat!(
                "requestTimeout: 8s\n",
                "policies:\n",
                "  - { name: probes, module: \"builtin:probes\", mode: monitor }\n",
                "  - { name: parallel, module: \"builtin:parallel\", mode: monitor }\n",
                "  - { name: volume-claims, module: \"builtin:volume-claims\", mode: monitor }\n",
            ),
        }
    }
}

/// One test's world. Dropping it deletes what it created (unless `STSGUARD_E2E_KEEP`
/// is set) and stops its local webhook.
pub struct Scenario {
    pub cluster: Cluster,
    /// The scenario's temporary namespace.
    pub namespace: String,
    /// A namespace the webhook must never see: the release's own namespace in-cluster,
    /// a second temporary namespace out-of-cluster (created on first use).
    pub webhook_namespace: String,
    test: String,
    run: String,
    policies: Policies,
    local: Option<LocalWebhook>,
    /// In-cluster, StatefulSets created "before the webhook" carry the opt-out label,
    /// which the next patch removes.
    unseen: Mutex<HashSet<String>>,
    created: Mutex<Vec<Created>>,
}

impl Scenario {
    /// A namespace for `test` with stsguard (built-ins, enforce mode) on its path.
    pub async fn start(test: &str) -> anyhow::Result<Self> {
        let mut s = Self::start_unregistered(test, Policies::Enforce).await?;
        s.register_webhook().await?;
        Ok(s)
    }

    /// Like [`Scenario::start`] with every built-in policy in monitor mode. `None`
    /// (after printing why) when the cluster has no monitor-mode webhook to offer.
    pub async fn start_monitor(test: &str) -> anyhow::Result<Option<Self>> {
        let cluster = Cluster::connect().await?;
        if let Mode::InCluster {
            monitor_label: None,
            ..
        } = cluster.mode
        {
            crate::skip(
                test,
                "the installed stsguard runs in enforce mode; set STSGUARD_E2E_MONITOR_LABEL=key=value to a \
                 namespace label that a monitor-mode release selects (deploy/kind/e2e.sh installs one), \
                 or run out-of-cluster",
            )?;
            return Ok(None);
        }
        let mut s = Self::start_with(cluster, test, Policies::Monitor).await?;
        s.register_webhook().await?;
        Ok(Some(s))
    }

    /// Like [`Scenario::start`] with the webhook running `config`. `None` (after
    /// printing why) in-cluster, where the installed release's configuration is
    /// what runs.
    pub async fn start_configured(
        test: &str,
        config: &'static str,
    ) -> anyhow::Result<Option<Self>> {
        let cluster = Cluster::connect().await?;
        if let Mode::InCluster { namespace, .. } = &cluster.mode {
            crate::skip(
                test,
                &format!(
                    "out-of-cluster only: it runs its own configuration, and the stsguard \
                     installed in {namespace} runs the release's"
                ),
            )?;
            return Ok(None);
        }
        let mut s = Self::start_with(cluster, test, Policies::Config(config)).await?;
        s.register_webhook().await?;
        Ok(Some(s))
    }

    /// Dry-runs `object` until `done` says the webhook's answer is what the test
    /// waits for (the webhook's caches see a new Service or StorageClass a moment
    /// after it is created), for up to 30 s; the last answer either way.
    pub async fn dry_run_until(
        &self,
        object: &Value,
        what: &str,
        done: impl Fn(&Outcome) -> bool,
    ) -> anyhow::Result<Outcome> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let outcome = self.create(object).dry_run().send().await?;
            if done(&outcome) {
                return Ok(outcome);
            }
            if Instant::now() > deadline {
                bail!("{what}: not within 30 s; the last answer: {outcome:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A namespace for `test` that stsguard does not see yet: objects created now are
    /// like those created before the webhook was installed. Call
    /// [`Scenario::register_webhook`] next.
    pub async fn start_unregistered(test: &str, policies: Policies) -> anyhow::Result<Self> {
        Self::start_with(Cluster::connect().await?, test, policies).await
    }

    async fn start_with(cluster: Cluster, test: &str, policies: Policies) -> anyhow::Result<Self> {
        let run = run_id();
        let mut labels =
            json!({ PART_OF.0: PART_OF.1, "stsguard-e2e.io/test": test, RUN_LABEL: run });
        if let (
            Policies::Monitor,
            Mode::InCluster {
                monitor_label: Some((k, v)),
                ..
            },
        ) = (policies, &cluster.mode)
        {
            labels[k] = json!(v);
        }
        let prefix: String = format!("e2e-{test}-").chars().take(50).collect();
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": { "generateName": prefix, "labels": labels },
        }))?;
        let namespace = Api::<Namespace>::all(cluster.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .context("creating the scenario's namespace")?
            .name_any();
        let webhook_namespace = match &cluster.mode {
            Mode::InCluster { namespace, .. } => namespace.clone(),
            Mode::OutOfCluster { .. } => format!("{namespace}-own"),
        };
        let s = Scenario {
            cluster,
            namespace: namespace.clone(),
            webhook_namespace,
            test: test.to_string(),
            run,
            policies,
            local: None,
            unseen: Mutex::default(),
            created: Mutex::new(vec![Created::Namespace(namespace)]),
        };
        Ok(s)
    }

    /// Puts stsguard on this scenario's admission path and waits until the API server
    /// calls it. Out-of-cluster: starts the binary and registers it by URL. In-cluster:
    /// the installed webhook is already there; only the wait applies.
    pub async fn register_webhook(&mut self) -> anyhow::Result<()> {
        if let Mode::OutOfCluster { bin, host } = &self.cluster.mode {
            let local = LocalWebhook::start(bin, *host, self.policies.config()).await?;
            let (url, ca_pem) = (format!("{}/mutate", local.base_url), local.ca_pem.clone());
            self.local = Some(local);
            self.register_url(&url, &ca_pem).await?;
        }
        self.wait_until_webhook_answers().await
    }

    /// Registers a MutatingWebhookConfiguration that sends this scenario's
    /// StatefulSet writes to `url` (the chart's rules and selectors), removed when
    /// the scenario is dropped.
    pub async fn register_url(&self, url: &str, ca_pem: &str) -> anyhow::Result<()> {
        let name = format!("stsguard-e2e-{}", self.run);
        let config = webhook::configuration(
            &name,
            url,
            ca_pem,
            &self.run,
            &[self.webhook_namespace.as_str(), "kube-system"],
        )?;
        self.remember(Created::WebhookConfiguration(name));
        Api::<MutatingWebhookConfiguration>::all(self.client())
            .create(&PostParams::default(), &config)
            .await
            .with_context(|| format!("registering the webhook at {url}"))?;
        Ok(())
    }

    /// Dry-runs a bare StatefulSet until stsguard's warnings come back: the API server
    /// picks up a new webhook configuration a moment after it is created.
    async fn wait_until_webhook_answers(&self) -> anyhow::Result<()> {
        let probe = fixtures::bare_statefulset().named("webhook-probe");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = match self.create(&probe).dry_run().send().await? {
                Outcome::Admitted(a) if !a.stsguard_warnings().is_empty() => return Ok(()),
                // A configuration that denies the probe answers too.
                Outcome::Denied(d) if d.message.contains("denied StatefulSet") => return Ok(()),
                Outcome::Admitted(a) => format!(
                    "admitted without stsguard warnings (warnings: {:?})",
                    a.warnings
                ),
                Outcome::Denied(d) => format!("{} {}: {}", d.code, d.reason, d.message),
            };
            if Instant::now() > deadline {
                let log = self
                    .local
                    .as_ref()
                    .map(|l| format!("\nwebhook log:\n{}", l.log()));
                bail!(
                    "stsguard did not answer for namespace {} within 60 s; last: {last}{}",
                    self.namespace,
                    log.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub fn client(&self) -> Client {
        self.cluster.client.clone()
    }

    fn remember(&self, item: Created) {
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(item);
    }

    /// Creates `object` in the scenario's namespace.
    pub fn create(&self, object: &Value) -> Submission {
        Submission::create(self.client(), &self.namespace, object.clone())
    }

    /// Creates `object` in the webhook's own namespace, which stsguard must never see.
    pub async fn create_in_webhook_namespace(&self, object: &Value) -> anyhow::Result<Submission> {
        match &self.cluster.mode {
            Mode::InCluster { .. } => self.remember(Created::StatefulSet {
                namespace: self.webhook_namespace.clone(),
                name: object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            }),
            Mode::OutOfCluster { .. } => {
                // Labelled like the scenario's namespace: only the NotIn exclusion keeps
                // the webhook away from it.
                let namespace: Namespace = serde_json::from_value(json!({
                    "metadata": {
                        "name": self.webhook_namespace,
                        "labels": { PART_OF.0: PART_OF.1, RUN_LABEL: self.run },
                    },
                }))?;
                self.remember(Created::Namespace(self.webhook_namespace.clone()));
                Api::<Namespace>::all(self.client())
                    .create(&PostParams::default(), &namespace)
                    .await
                    .context("creating the stand-in for the webhook's namespace")?;
            }
        }
        Ok(Submission::create(
            self.client(),
            &self.webhook_namespace,
            object.clone(),
        ))
    }

    /// Creates `object` where stsguard does not see it, as if it had been created before
    /// stsguard was installed. Out-of-cluster this happens before registration, for real.
    /// In-cluster the webhook is always registered, so the object carries the opt-out
    /// label `stsguard.io/ignore: "true"`, and the next [`Scenario::patch`] of it removes
    /// the label in the same request: from then on the webhook sees it, like any
    /// StatefulSet that predates it.
    pub async fn create_before_webhook(&self, object: &Value) -> anyhow::Result<Admitted> {
        let object = match (&self.cluster.mode, &self.local) {
            (Mode::OutOfCluster { .. }, None) => object.clone(),
            (Mode::OutOfCluster { .. }, Some(_)) => {
                bail!("create_before_webhook after register_webhook")
            }
            (Mode::InCluster { .. }, _) => {
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.unseen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name);
                object.clone().labelled(IGNORE_LABEL, "true")
            }
        };
        let created = accepts(self.create(&object)).await?;
        if !created.stsguard_warnings().is_empty() {
            bail!(
                "stsguard saw a StatefulSet it should not have: {:?}",
                created.stsguard_warnings()
            );
        }
        Ok(created)
    }

    /// Patches (strategic merge, like `kubectl patch`) the StatefulSet `name`.
    pub fn patch(&self, name: &str, patch: Value) -> Submission {
        let mut patch = patch;
        if self
            .unseen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
        {
            patch["metadata"]["labels"][IGNORE_LABEL] = Value::Null;
        }
        Submission::patch(self.client(), &self.namespace, name, patch)
    }

    /// The StatefulSet `name` as stored, if it is.
    pub async fn get(&self, name: &str) -> anyhow::Result<Option<StatefulSet>> {
        Ok(
            Api::<StatefulSet>::namespaced(self.client(), &self.namespace)
                .get_opt(name)
                .await?,
        )
    }

    /// Whether this cluster can run pods; prints why not (and the test should return).
    pub async fn needs_pods(&self) -> anyhow::Result<bool> {
        match self.cluster.can_run_pods().await? {
            Ok(()) => Ok(true),
            Err(reason) => {
                crate::skip(
                    &self.test,
                    &format!("{reason}; the checks on running pods need nodes"),
                )?;
                Ok(false)
            }
        }
    }
}

impl Scenario {
    /// `true` when pods can look each other up through cluster DNS; else prints why
    /// the check is skipped and returns `false`.
    pub async fn needs_cluster_dns(&self) -> anyhow::Result<bool> {
        match self.cluster.has_cluster_dns().await? {
            Ok(()) => Ok(true),
            Err(reason) => {
                crate::skip(&self.test, &reason)?;
                Ok(false)
            }
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if let Some(local) = &self.local {
            // Captured by the test harness: shown only when the test fails.
            eprintln!("--- stsguard log ({}) ---\n{}", self.test, local.log());
        }
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        cleanup::delete_all(&self.cluster.config, created);
        // `local` is dropped after this: the process stops once it is unregistered.
    }
}

/// A short random id for names and labels.
fn run_id() -> String {
    let n = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
    format!("{:010x}", n & 0xff_ffff_ffff)
}

/// Asserts that none of `warnings` comes from stsguard.
pub fn assert_no_stsguard_warnings(what: &str, warnings: &[String]) {
    let ours = stsguard_warnings(warnings);
    assert!(
        ours.is_empty(),
        "{what}: expected no stsguard warnings, got {ours:#?}"
    );
}
