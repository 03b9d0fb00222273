//! What stsguard's changes mean for running pods of the counter app. These need a
//! cluster with nodes (kind) and the counter app's image (STSGUARD_E2E_COUNTER_IMAGE);
//! on a cluster without nodes they print why they are skipped and pass.

use std::time::Duration;

use serde_json::json;
use stsguard_e2e::fixtures::{
    Manifest, counter_headless_service, counter_statefulset, toolbox_image,
};
use stsguard_e2e::pods::{self, is_ready};
use stsguard_e2e::{Scenario, accepts};

const COUNTER: &str = "app.kubernetes.io/name=counter";
const START: Duration = Duration::from_secs(180);

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn parallel_starts_every_replica_at_once() -> anyhow::Result<()> {
    let s = Scenario::start("parallel").await?;
    if !s.needs_pods().await? {
        return Ok(());
    }
    // A readiness gate that nobody sets keeps every pod unready. Under OrderedReady
    // only pod 0 would ever be created; under Parallel all of them are, together.
    let mut sts = counter_statefulset(3).named("gated");
    sts["spec"]["template"]["spec"]["readinessGates"] =
        json!([{ "conditionType": "stsguard.io/e2e-never" }]);

    let stored = accepts(s.create(&sts)).await?;
    assert_eq!(stored.pod_management_policy(), "Parallel");

    let pods = pods::wait_for_pods(
        &s.client(),
        &s.namespace,
        COUNTER,
        3,
        "all 3 replicas to be created while none is Ready",
        |_| true,
        START,
    )
    .await?;
    assert!(
        pods.iter().all(|p| !is_ready(p)),
        "the readiness gate did not hold: {}",
        pods::describe(&pods)
    );
    Ok(())
}

/// The counter app as the course lab runs it, behind its headless Service, with
/// HTTP probes named by annotation; returns once both pods are Ready with the probes
/// stsguard added, having counted 3 visits on counter-0 and 1 on counter-1.
async fn two_counting_pods(s: &Scenario) -> anyhow::Result<()> {
    let client = s.client();
    let ns = s.namespace.as_str();
    pods::create_service(&client, ns, counter_headless_service()).await?;
    let sts = counter_statefulset(2)
        .annotated("probes.stsguard.io/readiness-path", "/readyz")
        .annotated("probes.stsguard.io/liveness-path", "/healthz")
        .annotated("probes.stsguard.io/port", "http");

    let stored = accepts(s.create(&sts)).await?;
    assert_eq!(stored.pod_management_policy(), "Parallel");
    let containers = stored.containers();
    let readiness = containers[0]
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref());
    assert_eq!(
        readiness.and_then(|h| h.path.as_deref()),
        Some("/readyz"),
        "{containers:#?}"
    );

    // The probes stsguard added pass: the pods become Ready.
    pods::wait_for_pods(
        &client,
        ns,
        COUNTER,
        2,
        "2 Ready counter pods",
        is_ready,
        START,
    )
    .await?;

    // Each pod counts its own visits, on its own volume.
    for _ in 0..3 {
        pods::visit(&client, ns, "counter-0").await?;
    }
    pods::visit(&client, ns, "counter-1").await?;
    assert_eq!(pods::visits(&client, ns, "counter-0").await?, 3);
    assert_eq!(pods::visits(&client, ns, "counter-1").await?, 1);
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn counter_pods_keep_their_own_counts_across_a_restart() -> anyhow::Result<()> {
    let s = Scenario::start("counter").await?;
    if !s.needs_pods().await? {
        return Ok(());
    }
    two_counting_pods(&s).await?;
    let client = s.client();
    let ns = s.namespace.as_str();

    // A deleted pod comes back with its count: its claim survives it.
    let claim = pods::claim_uid(&client, ns, "data-counter-0").await?;
    assert!(claim.is_some(), "no claim data-counter-0");
    pods::delete_and_wait_back(&client, ns, "counter-0", START).await?;
    assert_eq!(
        pods::claim_uid(&client, ns, "data-counter-0").await?,
        claim,
        "the claim was replaced"
    );
    assert_eq!(pods::visits(&client, ns, "counter-0").await?, 3);
    assert_eq!(pods::visits(&client, ns, "counter-1").await?, 1);
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn counter_pods_find_each_other_by_name() -> anyhow::Result<()> {
    let s = Scenario::start("counter-dns").await?;
    // Both checked up front: without either, nothing here could pass.
    if !s.needs_pods().await? || !s.needs_cluster_dns().await? {
        return Ok(());
    }
    two_counting_pods(&s).await?;

    // Pods find each other by name through the headless Service: a pod in the same
    // namespace asks counter-0.counter-headless and counter-1.counter-headless, and the
    // different counts prove each name reached its own pod.
    let script = r#"
        for attempt in $(seq 1 30); do
          a=$(wget -q -T 3 -O- http://counter-0.counter-headless:8080/visits) &&
          b=$(wget -q -T 3 -O- http://counter-1.counter-headless:8080/visits) &&
          { echo "counter-0=$a counter-1=$b"; exit 0; }
          sleep 2
        done
        exit 1"#;
    let output = pods::run_script(
        &s.client(),
        &s.namespace,
        "lookup",
        &toolbox_image(),
        script,
        START,
    )
    .await?;
    assert!(
        output.contains("counter-0=3 counter-1=1"),
        "the names reached other pods: {output:?}"
    );
    Ok(())
}
