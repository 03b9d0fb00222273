//! The cluster under test: a client from `KUBECONFIG` and how stsguard reaches it.

use std::env;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::ListParams;
use kube::{Api, Client, Config};

/// Label the stsguard chart puts on its MutatingWebhookConfiguration.
const CHART_LABEL: &str = "app.kubernetes.io/name=stsguard";

/// How stsguard is put on the admission path.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The stsguard chart is installed; its webhook runs in `namespace`.
    InCluster {
        namespace: String,
        /// `key=value` label that puts a namespace under a monitor-mode release
        /// (`STSGUARD_E2E_MONITOR_LABEL`); without one the monitor scenario is skipped.
        monitor_label: Option<(String, String)>,
    },
    /// Each scenario starts `bin` on `host` and registers it by URL.
    OutOfCluster { bin: PathBuf, host: IpAddr },
}

/// A connection to the cluster under test.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// Kept to build a fresh client for clean-up outside the test's runtime.
    pub config: Config,
    pub mode: Mode,
}

impl Cluster {
    /// Connects with the `KUBECONFIG` (or in-cluster) configuration and works out the
    /// mode from `STSGUARD_E2E_MODE` (`in-cluster` | `out-of-cluster`), else from
    /// whether an installed stsguard release is found.
    pub async fn connect() -> anyhow::Result<Self> {
        // kube and reqwest both use rustls with ring; make that the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = Config::infer()
            .await
            .context("no cluster configured: set KUBECONFIG (see tests/README.md)")?;
        let client = Client::try_from(config.clone()).context("building the Kubernetes client")?;
        let mode = match env::var("STSGUARD_E2E_MODE").ok().as_deref() {
            Some("in-cluster") => in_cluster(&client).await?.with_context(|| {
                format!(
                    "STSGUARD_E2E_MODE=in-cluster but no MutatingWebhookConfiguration labelled {CHART_LABEL} \
                     is installed: install deploy/charts/stsguard, or run out-of-cluster"
                )
            })?,
            Some("out-of-cluster") => out_of_cluster()?,
            Some(other) => bail!("STSGUARD_E2E_MODE={other}: expected in-cluster or out-of-cluster"),
            None => match in_cluster(&client).await? {
                Some(mode) => mode,
                None => out_of_cluster()?,
            },
        };
        Ok(Cluster {
            client,
            config,
            mode,
        })
    }

    /// Whether pods can run: at least one node that is Ready and schedulable.
    /// `Err` carries the reason to print when they cannot.
    pub async fn can_run_pods(&self) -> anyhow::Result<Result<(), String>> {
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .context("listing nodes")?;
        if nodes.items.is_empty() {
            return Ok(Err("the cluster has no nodes, so no pod can start".into()));
        }
        let ready = nodes.items.iter().any(|node| {
            let schedulable = !node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            let is_ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            schedulable && is_ready
        });
        if ready {
            Ok(Ok(()))
        } else {
            Ok(Err(format!(
                "none of the cluster's {} node(s) is Ready and schedulable",
                nodes.items.len()
            )))
        }
    }
}

/// The StorageClass the compliant fixture's claims name.
pub const E2E_STORAGE_CLASS: &str = "stsguard-e2e";

impl Cluster {
    /// Makes sure [`E2E_STORAGE_CLASS`] exists: not the default class, and with
    /// no provisioner, so nothing is ever provisioned from it. Created once and
    /// left in place (a cluster-scoped object every run shares, like the
    /// PolicyReport CRD).
    pub async fn ensure_storage_class(&self) -> anyhow::Result<()> {
        let api = Api::<StorageClass>::all(self.client.clone());
        if api.get_opt(E2E_STORAGE_CLASS).await?.is_some() {
            return Ok(());
        }
        let class: StorageClass = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": E2E_STORAGE_CLASS,
                "labels": {"app.kubernetes.io/part-of": "stsguard-e2e"},
            },
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
        }))?;
        match api.create(&kube::api::PostParams::default(), &class).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error).context("creating the StorageClass stsguard-e2e"),
        }
    }
}

/// The label cluster DNS Services carry (CoreDNS and kube-dns alike, by kubeadm,
/// kind and the managed offerings).
const DNS_LABEL: &str = "k8s-app=kube-dns";

impl Cluster {
    /// Whether pods can find each other by name: a cluster DNS Service in
    /// kube-system (labelled `k8s-app=kube-dns`) with at least one ready endpoint.
    /// `Err` carries the reason to print when they cannot.
    pub async fn has_cluster_dns(&self) -> anyhow::Result<Result<(), String>> {
        let services = Api::<Service>::namespaced(self.client.clone(), "kube-system")
            .list(&ListParams::default().labels(DNS_LABEL))
            .await
            .context("looking for cluster DNS (listing Services in kube-system)")?;
        let Some(service) = services.items.first() else {
            return Ok(Err(format!(
                "the cluster has no cluster DNS (no Service labelled {DNS_LABEL} in kube-system), \
                 so pods cannot look each other up by name"
            )));
        };
        let name = service.metadata.name.clone().unwrap_or_default();
        let slices = Api::<EndpointSlice>::namespaced(self.client.clone(), "kube-system")
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={name}")))
            .await
            .context("listing the cluster DNS Service's EndpointSlices")?;
        let ready = slices
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false));
        Ok(if ready {
            Ok(())
        } else {
            Err(format!(
                "the cluster DNS Service kube-system/{name} has no ready endpoint, so pods \
                 cannot look each other up by name"
            ))
        })
    }
}

/// In-cluster: `STSGUARD_E2E_NAMESPACE`, else the namespace of the one installed
/// release; `None` when no release is installed.
async fn in_cluster(client: &Client) -> anyhow::Result<Option<Mode>> {
    let monitor_label = match env::var("STSGUARD_E2E_MONITOR_LABEL") {
        Ok(label) => Some(
            label
                .split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| {
                    format!("STSGUARD_E2E_MONITOR_LABEL={label}: expected key=value")
                })?,
        ),
        Err(_) => None,
    };
    if let Ok(namespace) = env::var("STSGUARD_E2E_NAMESPACE") {
        return Ok(Some(Mode::InCluster {
            namespace,
            monitor_label,
        }));
    }
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default().labels(CHART_LABEL))
        .await
        .context("looking for an installed stsguard (listing MutatingWebhookConfigurations)")?;
    let namespaces: Vec<String> = configs
        .items
        .iter()
        .flat_map(|c| c.webhooks.iter().flatten())
        .filter_map(|w| {
            w.client_config
                .service
                .as_ref()
                .map(|s| s.namespace.clone())
        })
        .collect();
    match namespaces.as_slice() {
        [] => Ok(None),
        [namespace] => Ok(Some(Mode::InCluster {
            namespace: namespace.clone(),
            monitor_label,
        })),
        many => bail!(
            "several stsguard releases are installed (namespaces {many:?}): set STSGUARD_E2E_NAMESPACE \
             to the one to test"
        ),
    }
}

/// Out-of-cluster: the binary from `STSGUARD_BIN`, else the workspace's debug build.
fn out_of_cluster() -> anyhow::Result<Mode> {
    let bin = stsguard_bin()?;
    let host = match env::var("STSGUARD_E2E_WEBHOOK_HOST") {
        Ok(host) => host
            .parse()
            .with_context(|| format!("STSGUARD_E2E_WEBHOOK_HOST={host}: expected an IP address"))?,
        Err(_) => IpAddr::from([127, 0, 0, 1]),
    };
    Ok(Mode::OutOfCluster { bin, host })
}

/// The workspace's target folder (`CARGO_TARGET_DIR`, else `target/`).
pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The `stsguard` binary the suite runs: `STSGUARD_BIN`, else the workspace's debug build.
pub fn stsguard_bin() -> anyhow::Result<PathBuf> {
    let bin = match env::var_os("STSGUARD_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => target_dir().join("debug/stsguard"),
    };
    if !bin.is_file() {
        bail!(
            "the stsguard binary is not at {}: build it with `cargo build -p stsguard-webhook` \
             or point STSGUARD_BIN at one",
            bin.display()
        );
    }
    Ok(bin)
}
