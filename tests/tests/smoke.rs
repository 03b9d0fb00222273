//! `stsguard smoke-test` (what the chart's `helm test` runs) against the API server,
//! with a ServiceAccount token scoped like the chart's test Role. Needs no nodes: the
//! smoke test only dry-runs StatefulSets.

use std::process::Command;

use anyhow::Context;
use base64::Engine;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use stsguard_e2e::Scenario;
use stsguard_e2e::cluster::stsguard_bin;

/// Runs `stsguard smoke-test` against the scenario's namespace as a ServiceAccount that
/// may only create StatefulSets there; (exit code, stdout, stderr).
async fn smoke_test(s: &Scenario) -> anyhow::Result<(Option<i32>, String, String)> {
    let client = s.cluster.client.clone();
    let ns = &s.namespace;
    let name = "stsguard-smoke-test";
    let post = PostParams::default();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(
            &post,
            &serde_json::from_value(json!({"metadata": {"name": name}}))?,
        )
        .await
        .context("creating the ServiceAccount")?;
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&post, &serde_json::from_value(json!({
            "metadata": {"name": name},
            "rules": [{"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["create"]}],
        }))?)
        .await
        .context("creating the Role")?;
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(
            &post,
            &serde_json::from_value(json!({
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
            }))?,
        )
        .await
        .context("creating the RoleBinding")?;
    let token = Api::<ServiceAccount>::namespaced(client, ns)
        .create_token_request(
            name,
            &post,
            &serde_json::from_value(json!({"spec": {"expirationSeconds": 600}}))?,
        )
        .await
        .context("requesting a token for the ServiceAccount")?;
    let token = token
        .status
        .context("the TokenRequest has no status")?
        .token;

    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token)?;
    let ca_file = dir.path().join("ca.crt");
    let roots = s
        .cluster
        .config
        .root_cert
        .clone()
        .context("the kubeconfig names no certificate-authority for the API server")?;
    let pem: String = roots
        .iter()
        .map(|der| {
            let body = base64::engine::general_purpose::STANDARD.encode(der);
            let lines: Vec<&str> = body
                .as_bytes()
                .chunks(64)
                .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
                .collect();
            format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            )
        })
        .collect();
    std::fs::write(&ca_file, pem)?;

    let output = Command::new(stsguard_bin()?)
        .arg("smoke-test")
        .arg("--api-server")
        .arg(
            s.cluster
                .config
                .cluster_url
                .to_string()
                .trim_end_matches('/'),
        )
        .arg("--token-file")
        .arg(&token_file)
        .arg("--ca-file")
        .arg(&ca_file)
        .arg("--namespace")
        .arg(ns)
        .output()
        .context("running stsguard smoke-test")?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn smoke_test_passes_with_stsguard_on_the_admission_path() -> anyhow::Result<()> {
    let s = Scenario::start("smoke").await?;
    let (code, stdout, stderr) = smoke_test(&s).await?;
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout
            .contains("came back with probes on every container and podManagementPolicy Parallel"),
        "{stdout}"
    );
    assert!(
        stdout.contains("without volumeClaimTemplates was denied by stsguard"),
        "{stdout}"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn smoke_test_says_so_when_stsguard_is_not_on_the_path() -> anyhow::Result<()> {
    // In-cluster the installed webhook sees every namespace the suite can make.
    let cluster = stsguard_e2e::Cluster::connect().await?;
    if let stsguard_e2e::Mode::InCluster { namespace, .. } = &cluster.mode {
        return stsguard_e2e::skip(
            "smoke_test_says_so_when_stsguard_is_not_on_the_path",
            &format!(
                "out-of-cluster only: the stsguard installed in {namespace} sees every namespace \
                 the suite creates, so none is off its path"
            ),
        );
    }
    // A namespace stsguard does not see yet: what a missing registration looks like.
    let s = Scenario::start_unregistered("smoke-unseen", stsguard_e2e::scenario::Policies::Enforce)
        .await?;
    let (code, stdout, stderr) = smoke_test(&s).await?;
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("did not mutate the StatefulSet"),
        "{stderr}"
    );
    Ok(())
}
