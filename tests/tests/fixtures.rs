//! The golden fixtures the built-in policies are tested on are what a real API
//! server sends. A recording webhook (`stsguard_e2e::capture`) is put on the path of
//! a scenario namespace; the course-lab StatefulSet (`deploy/examples/`) is created,
//! scaled and given a new image; the three AdmissionRequests the API server sent are
//! compared with `policies/fixtures/golden/lab-statefulset-1.36.*/request.json`.
//!
//! `BLESS=1` writes the captured requests there instead (then run
//! `BLESS=1 cargo test -p policy-volume-claims --test golden` for their expected
//! objects, and review both in the diff). Needs no nodes; out-of-cluster only (the
//! API server must reach this machine).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use stsguard_e2e::capture::{self, CaptureWebhook};
use stsguard_e2e::scenario::Policies;
use stsguard_e2e::{Cluster, Mode, Scenario, accepts, skip};

/// The Kubernetes minor version the committed fixtures were captured from.
const CAPTURED_MINOR: &str = "36";
/// The namespace written into the fixtures in place of the scenario's.
const FIXTURE_NAMESPACE: &str = "lab";

/// The course-lab StatefulSet exactly as users apply it.
fn lab_statefulset() -> anyhow::Result<Value> {
    let text = include_str!("../../deploy/examples/lab-statefulset.yaml");
    for document in serde_yaml::Deserializer::from_str(text) {
        let object: Value = serde::Deserialize::deserialize(document)?;
        if object["kind"] == "StatefulSet" {
            return Ok(object);
        }
    }
    bail!("deploy/examples/lab-statefulset.yaml has no StatefulSet")
}

fn fixture(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/fixtures/golden")
        .join(format!("lab-statefulset-1.{CAPTURED_MINOR}.{scenario}"))
        .join("request.json")
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn golden_fixtures_are_what_the_api_server_sends() -> anyhow::Result<()> {
    const TEST: &str = "golden_fixtures_are_what_the_api_server_sends";
    let cluster = Cluster::connect().await?;
    let Mode::OutOfCluster { host, .. } = cluster.mode else {
        return skip(
            TEST,
            "out-of-cluster only: the API server calls a recording webhook on this machine",
        );
    };
    let version = cluster.client.apiserver_version().await?;
    let minor = version.minor.trim_end_matches('+');
    let bless = std::env::var_os("BLESS").is_some_and(|v| !v.is_empty() && v != "0");
    if minor != CAPTURED_MINOR && !bless {
        return skip(
            TEST,
            &format!(
                "the fixtures were captured from Kubernetes 1.{CAPTURED_MINOR}; this API server is {}",
                version.git_version
            ),
        );
    }

    let s = Scenario::start_unregistered("capture", Policies::Enforce).await?;
    let capture = CaptureWebhook::start(host).await?;
    s.register_url(&capture.url, &capture.ca_pem).await?;
    wait_until_called(&s, &capture).await?;

    let sts = lab_statefulset()?;
    accepts(s.create(&sts)).await?;
    accepts(s.patch("counter", json!({"spec": {"replicas": 5}}))).await?;
    accepts(s.patch(
        "counter",
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "counter", "image": "ghcr.io/stsguard/counter-app:0.2.0"}
        ]}}}}),
    ))
    .await?;

    // Only the suite's own writes: the controllers (the StatefulSet controller,
    // the garbage collector) write StatefulSets too.
    let captured: Vec<_> = capture
        .take()
        .into_iter()
        .filter(|request| request["options"]["fieldManager"] == "stsguard-e2e")
        .collect();
    let scenarios = ["create", "update-scale", "update-image"];
    if captured.len() != scenarios.len() {
        bail!(
            "expected {} reviews (create, scale, new image), the API server sent {}: {captured:#?}",
            scenarios.len(),
            captured.len()
        );
    }
    let mut differences = Vec::new();
    for (scenario, mut request) in scenarios.into_iter().zip(captured) {
        capture::normalize(&mut request, FIXTURE_NAMESPACE);
        let path = fixture(scenario);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap())?;
            std::fs::write(&path, serde_json::to_string_pretty(&request)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {} (from {})", path.display(), version.git_version);
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (BLESS=1 writes it)", path.display()))?;
        let committed: Value = serde_json::from_str(&text)?;
        if committed != request {
            differences.push(format!(
                "{}: the API server ({}) sent\n{}",
                path.display(),
                version.git_version,
                serde_json::to_string_pretty(&request)?
            ));
        }
    }
    // podManagementPolicy cannot change after creation (the parallel policy never
    // touches it on UPDATE): the API server refuses, listing what may change.
    let refused = s
        .patch(
            "counter",
            json!({"spec": {"podManagementPolicy": "Parallel"}}),
        )
        .send()
        .await?;
    let stsguard_e2e::Outcome::Denied(denial) = refused else {
        bail!("the API server let podManagementPolicy change: {refused:?}");
    };
    let message = denial.message.replace(&s.namespace, FIXTURE_NAMESPACE);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "fixtures/k8s-1.{CAPTURED_MINOR}/immutable-field-error.txt"
    ));
    if bless {
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(&path, format!("{message}\n"))?;
    } else {
        let committed = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (BLESS=1 writes it)", path.display()))?;
        if committed.trim_end() != message {
            differences.push(format!(
                "{}: the API server said\n{message}",
                path.display()
            ));
        }
    }
    assert!(
        message.contains("podManagementPolicy") || message.contains("Forbidden"),
        "{message}"
    );
    assert!(
        differences.is_empty(),
        "captured requests differ from the fixtures (BLESS=1 rewrites them):\n{}",
        differences.join("\n")
    );
    Ok(())
}

/// Dry-runs a StatefulSet until the recording webhook sees it: the API server picks
/// up a new webhook configuration a moment after it is created.
async fn wait_until_called(s: &Scenario, capture: &CaptureWebhook) -> anyhow::Result<()> {
    let probe = lab_statefulset()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        accepts(s.create(&probe).dry_run()).await?;
        if !capture.take().is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the API server did not call the recording webhook within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
