//! The server's caches of what policies read, against a real API server, where it
//! goes wrong: a kind its ServiceAccount may not watch, a CRD that is not
//! installed, objects near the API server's size limit, and the API server going
//! away. Each case starts its own `stsguard serve` (not registered as a webhook)
//! with the reader test policy (`policies/testing/reader`) and talks to it over
//! HTTPS. Out-of-cluster only; needs no nodes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use stsguard_e2e::cluster::{stsguard_bin, target_dir};
use stsguard_e2e::control_plane::{Assets, ControlPlane};
use stsguard_e2e::scenario::Policies;
use stsguard_e2e::webhook::LocalWebhook;
use stsguard_e2e::{Cluster, Mode, Scenario, skip};

/// The reader test policy, built by the webhook's build script.
fn reader_policy() -> anyhow::Result<PathBuf> {
    let path = target_dir().join("wasm-policies/wasm32-wasip2/policy/test_policy_reader.wasm");
    if !path.is_file() {
        bail!(
            "no {}: build the webhook first (cargo build -p stsguard-webhook builds the test \
             policies)",
            path.display()
        );
    }
    Ok(path)
}

/// A config running the reader policy with `settings`, granted what it declares.
fn config(settings: Value) -> anyhow::Result<String> {
    Ok(format!(
        "requestTimeout: 8s
policies:
  - name: reader
    module: {}
    failurePolicy: ignore
    memoryLimit: 64Mi
    reads:
      - {{apiVersion: v1, kind: Service}}
      - {{apiVersion: storage.k8s.io/v1, kind: StorageClass}}
      - {{apiVersion: policy/v1, kind: PodDisruptionBudget}}
      - {{apiVersion: v1, kind: ConfigMap}}
      - {{apiVersion: e2e.stsguard.io/v1, kind: Widget}}
    settings: {settings}
",
        reader_policy()?.display()
    ))
}

/// An AdmissionReview creating the lab StatefulSet `web` in `namespace`.
fn review(namespace: &str) -> Value {
    let mut object = stsguard_e2e::fixtures::bare_statefulset();
    object["metadata"]["namespace"] = json!(namespace);
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "e2e-cluster-cache",
            "kind": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
            "resource": {"group": "apps", "version": "v1", "resource": "statefulsets"},
            "operation": "CREATE",
            "namespace": namespace,
            "name": "web",
            "userInfo": {"username": "stsguard-e2e"},
            "object": object,
        },
    })
}

/// The reader's one warning for a review, or its failure as the host skipped it.
async fn read(webhook: &LocalWebhook, namespace: &str) -> anyhow::Result<String> {
    let response = webhook.review(&review(namespace)).await?;
    anyhow::ensure!(response["allowed"] == true, "denied: {response}");
    Ok(response["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The cluster, when the suite runs out-of-cluster; else prints why `test` skips.
async fn out_of_cluster(test: &str) -> anyhow::Result<Option<Cluster>> {
    let cluster = Cluster::connect().await?;
    if let Mode::InCluster { .. } = cluster.mode {
        skip(
            test,
            "out-of-cluster only: it starts its own stsguard serve with its own identity",
        )?;
        return Ok(None);
    }
    Ok(Some(cluster))
}

/// Polls `GET path` until `done` holds for its body, for up to 30 s.
async fn poll(
    webhook: &LocalWebhook,
    path: &str,
    what: &str,
    done: impl Fn(u16, &str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = webhook.get(path).await?;
        if done(code, &body) {
            return Ok(body);
        }
        if Instant::now() > deadline {
            bail!(
                "{what}: not within 30 s; last {path} ({code}):\n{body}\nlog:\n{}",
                webhook.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A kubeconfig for the ServiceAccount `name` of `namespace` (which has no RBAC
/// at all), against the suite's API server.
async fn service_account_kubeconfig(
    s: &Scenario,
    name: &str,
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    let accounts = Api::<ServiceAccount>::namespaced(s.client(), &s.namespace);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}}))?,
        )
        .await
        .context("creating the ServiceAccount")?;
    let token = accounts
        .create_token_request(
            name,
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"expirationSeconds": 3600}}))?,
        )
        .await?
        .status
        .context("the TokenRequest has no status")?
        .token;
    let config = &s.cluster.config;
    let ca = config
        .root_cert
        .as_ref()
        .and_then(|roots| roots.first())
        .context("the kubeconfig names no CA")?;
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(ca)
    );
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {
            "server": config.cluster_url.to_string(),
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(pem),
        }}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": name}}],
        "current-context": "e2e",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig)?)?;
    Ok(path)
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn a_kind_the_service_account_may_not_watch_is_named_and_does_not_block_readiness()
-> anyhow::Result<()> {
    const TEST: &str = "a_kind_the_service_account_may_not_watch_is_named";
    let Some(cluster) = out_of_cluster(TEST).await? else {
        return Ok(());
    };
    let Mode::OutOfCluster { host, .. } = cluster.mode else {
        unreachable!()
    };
    let s = Scenario::start_unregistered("reads-forbidden", Policies::Enforce).await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = service_account_kubeconfig(&s, "nobody", dir.path()).await?;
    let settings = json!({"read": "get", "apiVersion": "v1", "kind": "Service",
                          "namespace": s.namespace, "name": "web"});
    // Ready although nothing could be listed: a 403 does not heal by waiting.
    let webhook = LocalWebhook::start_with_env(
        &stsguard_bin()?,
        host,
        &config(settings)?,
        &[("KUBECONFIG", &kubeconfig)],
    )
    .await?;
    let (code, body) = webhook.get("/readyz").await?;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(
            "cluster v1 Service: NOT SYNCED: forbidden: stsguard's ServiceAccount may not list \
             and watch services: grant `get, list, watch` on it"
        ),
        "{body}"
    );
    let (_, metrics) = webhook.get("/metrics").await?;
    assert!(
        metrics.contains("stsguard_cluster_synced{kind=\"v1 Service\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l
            .starts_with("stsguard_cluster_watch_errors_total{kind=\"v1 Service\"}")
            && !l.ends_with(" 0")),
        "{metrics}"
    );
    // Its reads fail, and failurePolicy ignore skips the policy.
    let warnings = read(&webhook, &s.namespace).await?;
    assert!(
        warnings.contains("stsguard/reader: the policy could not evaluate this object"),
        "{warnings}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn a_crd_that_is_not_installed_is_named_and_the_other_kinds_serve() -> anyhow::Result<()> {
    let Some(cluster) = out_of_cluster("a_crd_that_is_not_installed_is_named").await? else {
        return Ok(());
    };
    let Mode::OutOfCluster { host, .. } = cluster.mode else {
        unreachable!()
    };
    let s = Scenario::start_unregistered("reads-no-crd", Policies::Enforce).await?;
    stsguard_e2e::pods::create_service(
        &s.client(),
        &s.namespace,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
    )
    .await?;
    let settings = json!({"read": "get", "apiVersion": "v1", "kind": "Service",
                          "namespace": s.namespace, "name": "web"});
    let webhook = LocalWebhook::start(&stsguard_bin()?, host, &config(settings)?).await?;
    let body = poll(&webhook, "/readyz", "the readiness report", |code, body| {
        code == 200 && body.contains("cluster v1 Service: synced")
    })
    .await?;
    assert!(
        body.contains("cluster e2e.stsguard.io/v1 Widget: NOT SYNCED: e2e.stsguard.io/v1 Widget is not served by the API server (is its CustomResourceDefinition installed?)"),
        "{body}"
    );
    let warnings = read(&webhook, &s.namespace).await?;
    assert!(
        warnings.contains(&format!("get Service {}/web: found", s.namespace)),
        "{warnings}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn objects_near_the_size_limit_are_read_and_a_list_of_them_is_bounded() -> anyhow::Result<()>
{
    let Some(cluster) = out_of_cluster("objects_near_the_size_limit").await? else {
        return Ok(());
    };
    let Mode::OutOfCluster { host, .. } = cluster.mode else {
        unreachable!()
    };
    let s = Scenario::start_unregistered("reads-large", Policies::Enforce).await?;
    // 20 ConfigMaps of 900 KiB (700 of data, 200 of annotation; the API server takes 1 MiB): 18 MiB
    // of JSON, more than a quarter of the reader's 64Mi.
    let maps = Api::<ConfigMap>::namespaced(s.client(), &s.namespace);
    let data = "x".repeat(700 << 10);
    for n in 0..20 {
        let map: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": format!("big-{n}"), "annotations": {"note": "y".repeat(200 << 10)}},
            "data": {"payload": data},
        }))?;
        maps.create(&PostParams::default(), &map).await?;
    }
    let list = json!({"read": "list", "apiVersion": "v1", "kind": "ConfigMap",
                      "namespace": s.namespace, "report": true});
    let webhook = LocalWebhook::start(&stsguard_bin()?, host, &config(list)?).await?;
    let warnings = read(&webhook, &s.namespace).await?;
    assert!(
        warnings.contains("refused too_large: listing v1 ConfigMap"),
        "{warnings}"
    );
    assert!(warnings.contains("narrow the list"), "{warnings}");
    drop(webhook);

    let get = json!({"read": "get", "apiVersion": "v1", "kind": "ConfigMap",
                     "namespace": s.namespace, "name": "big-7"});
    let webhook = LocalWebhook::start(&stsguard_bin()?, host, &config(get)?).await?;
    let warnings = read(&webhook, &s.namespace).await?;
    assert!(
        warnings.contains(&format!("get ConfigMap {}/big-7: found", s.namespace)),
        "{warnings}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn reads_keep_answering_from_the_cache_when_the_api_server_goes_away() -> anyhow::Result<()> {
    const TEST: &str = "reads_keep_answering_from_the_cache_when_the_api_server_goes_away";
    // Its own control plane: stopping the suite's would stop every other test.
    let assets = match Assets::from_env() {
        Ok(assets) => assets,
        Err(_) => {
            return skip(
                TEST,
                "needs KUBEBUILDER_ASSETS: it stops an API server of its own",
            );
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plane = ControlPlane::start(&assets).await?;
    let config_file = kube::config::Kubeconfig::read_from(plane.kubeconfig())?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(config_file, &Default::default()).await?,
    )?;
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "lab"}}))?,
        )
        .await?;
    Api::<Service>::namespaced(client, "lab")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "web"},
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}))?,
        )
        .await?;
    let settings = json!({"read": "get", "apiVersion": "v1", "kind": "Service",
                          "namespace": "lab", "name": "web"});
    let webhook = LocalWebhook::start_with_env(
        &stsguard_bin()?,
        [127, 0, 0, 1].into(),
        &config(settings)?,
        &[("KUBECONFIG", plane.kubeconfig())],
    )
    .await?;
    assert!(
        read(&webhook, "lab")
            .await?
            .contains("get Service lab/web: found")
    );

    drop(plane);
    // Still answered, from what the cache holds.
    assert!(
        read(&webhook, "lab")
            .await?
            .contains("get Service lab/web: found")
    );
    let body = poll(
        &webhook,
        "/readyz",
        "readiness to say the cache is stale",
        |code, body| {
            code == 200
                && body
                    .lines()
                    .any(|l| l.starts_with("cluster v1 Service: synced") && l.contains("; STALE"))
        },
    )
    .await?;
    assert!(body.contains("cannot reach the API server"), "{body}");
    let (_, metrics) = webhook.get("/metrics").await?;
    assert!(
        metrics.contains("stsguard_cluster_synced{kind=\"v1 Service\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stsguard_cluster_last_event_age_seconds{kind=\"v1 Service\"}"),
        "{metrics}"
    );
    Ok(())
}
