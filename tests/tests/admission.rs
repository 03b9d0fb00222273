//! What the API server stores, denies and warns about with stsguard on the admission
//! path. These need no nodes: they run against any API server (see tests/README.md).

use serde_json::json;
use stsguard_e2e::fixtures::{
    Manifest, bare_statefulset, compliant_service, compliant_statefulset,
    statefulset_without_claims,
};
use stsguard_e2e::scenario::{Policies, assert_no_stsguard_warnings};
use stsguard_e2e::{Scenario, accepts, rejects};

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn bare_lab_statefulset_is_stored_with_probes_and_parallel() -> anyhow::Result<()> {
    let s = Scenario::start("bare").await?;

    let stored = accepts(s.create(&bare_statefulset())).await?;

    assert_eq!(stored.pod_management_policy(), "Parallel");
    assert!(
        stored.every_container_has_probes(),
        "probes missing: {:#?}",
        stored.containers()
    );
    for c in stored.containers() {
        for probe in [&c.readiness_probe, &c.liveness_probe]
            .into_iter()
            .flatten()
        {
            let handlers = [
                probe.http_get.is_some(),
                probe.tcp_socket.is_some(),
                probe.grpc.is_some(),
                probe.exec.is_some(),
            ];
            assert_eq!(
                handlers.iter().filter(|h| **h).count(),
                1,
                "a probe needs exactly one handler: {probe:?}"
            );
        }
    }
    // Every change is explained to the user.
    assert!(
        !stored.warnings_of("probes", false).is_empty(),
        "warnings: {:#?}",
        stored.warnings
    );
    assert!(
        !stored.warnings_of("parallel", false).is_empty(),
        "warnings: {:#?}",
        stored.warnings
    );
    // What the API server returned is what it stored.
    let again = s.get("web").await?.expect("the StatefulSet is stored");
    assert_eq!(
        serde_json::to_value(&again)?["spec"],
        serde_json::to_value(&stored.object)?["spec"]
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn compliant_statefulset_is_stored_unchanged() -> anyhow::Result<()> {
    let s = Scenario::start("compliant").await?;
    // What the policies that read the cluster look for: its Service, its class.
    s.cluster.ensure_storage_class().await?;
    stsguard_e2e::pods::create_service(&s.client(), &s.namespace, compliant_service()).await?;
    s.dry_run_until(
        &compliant_statefulset().named("probe"),
        "the webhook to see them",
        |o| matches!(o, stsguard_e2e::Outcome::Admitted(a) if a.stsguard_warnings().is_empty()),
    )
    .await?;
    // The same object, stored once past stsguard and once around it (opt-out label):
    // the API server's defaulting is the only change both get.
    let reference = accepts(
        s.create(
            &compliant_statefulset()
                .named("reference")
                .labelled("stsguard.io/ignore", "true"),
        ),
    )
    .await?;

    let stored = accepts(s.create(&compliant_statefulset())).await?;

    assert_eq!(
        stored.spec(),
        reference.spec(),
        "stsguard changed a compliant StatefulSet"
    );
    assert_eq!(
        stored.object.metadata.annotations,
        reference.object.metadata.annotations
    );
    assert_no_stsguard_warnings("compliant StatefulSet", &stored.warnings);
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn statefulset_without_claims_is_rejected_with_the_policy_message() -> anyhow::Result<()> {
    let s = Scenario::start("no-claims").await?;

    let denial = rejects(s.create(&statefulset_without_claims())).await?;

    let expected = format!(
        "policy volume-claims denied StatefulSet {}/no-claims: ",
        s.namespace
    );
    assert!(
        denial.message.contains(&expected),
        "expected {expected:?} in {:?}",
        denial.message
    );
    assert!(
        denial.message.contains("volumeClaimTemplates"),
        "the message should say what is missing: {:?}",
        denial.message
    );
    assert!(
        s.get("no-claims").await?.is_none(),
        "a denied StatefulSet was stored"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn updates_of_a_statefulset_created_before_the_webhook_succeed() -> anyhow::Result<()> {
    let mut s = Scenario::start_unregistered("preexisting", Policies::Enforce).await?;
    let old = s.create_before_webhook(&bare_statefulset()).await?;
    assert_eq!(old.pod_management_policy(), "OrderedReady");
    assert!(old.no_container_has_probes());
    s.register_webhook().await?;

    // Scale: the pod template does not change, so nothing may be added that would
    // restart every pod, and podManagementPolicy is immutable.
    let scaled = accepts(s.patch("web", json!({ "spec": { "replicas": 1 } }))).await?;
    assert_eq!(scaled.replicas(), Some(1));
    assert_eq!(scaled.pod_management_policy(), "OrderedReady");
    assert!(
        scaled.no_container_has_probes(),
        "probes added on a scale: {:#?}",
        scaled.containers()
    );
    assert!(
        !scaled.warnings_of("probes", false).is_empty(),
        "a warning should say which probes are missing: {:#?}",
        scaled.warnings
    );

    // Image change: the pods restart anyway; the update must still be accepted.
    let image = "ghcr.io/stsguard/counter-app:0.1.1";
    let patch = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "counter-app", "image": image }] } } } });
    let changed = accepts(s.patch("web", patch)).await?;
    assert_eq!(changed.containers()[0].image.as_deref(), Some(image));
    assert_eq!(changed.pod_management_policy(), "OrderedReady");
    assert!(
        changed.every_container_has_probes(),
        "the template changes anyway, so the probes policy adds probes: {:#?}",
        changed.containers()
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn server_side_dry_run_behaves_like_the_real_request_and_stores_nothing() -> anyhow::Result<()>
{
    let s = Scenario::start("dry-run").await?;

    let dry = accepts(s.create(&bare_statefulset()).dry_run()).await?;
    assert!(
        s.get("web").await?.is_none(),
        "a dry run stored the StatefulSet"
    );
    let real = accepts(s.create(&bare_statefulset())).await?;

    assert_eq!(dry.spec(), real.spec());
    assert_eq!(dry.warnings, real.warnings);
    assert_eq!(dry.pod_management_policy(), "Parallel");

    let dry_denial = rejects(s.create(&statefulset_without_claims()).dry_run()).await?;
    let real_denial = rejects(s.create(&statefulset_without_claims())).await?;
    assert_eq!(dry_denial.message, real_denial.message);
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn monitor_mode_admits_unchanged_and_warns() -> anyhow::Result<()> {
    let Some(s) = Scenario::start_monitor("monitor").await? else {
        return Ok(());
    };

    let stored = accepts(s.create(&statefulset_without_claims())).await?;

    assert_eq!(stored.pod_management_policy(), "OrderedReady");
    assert!(stored.no_container_has_probes());
    for policy in ["probes", "parallel", "volume-claims"] {
        assert!(
            !stored.warnings_of(policy, true).is_empty(),
            "no monitor warning from {policy}: {:#?}",
            stored.warnings
        );
    }
    assert!(
        stored.warnings_of("volume-claims", false).is_empty(),
        "monitor warnings must say (monitor): {:#?}",
        stored.warnings
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn opt_out_label_keeps_stsguard_away() -> anyhow::Result<()> {
    let s = Scenario::start("opt-out-label").await?;

    let stored =
        accepts(s.create(&statefulset_without_claims().labelled("stsguard.io/ignore", "true")))
            .await?;

    assert_eq!(stored.pod_management_policy(), "OrderedReady");
    assert!(stored.no_container_has_probes());
    assert_no_stsguard_warnings("labelled stsguard.io/ignore", &stored.warnings);
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn opt_out_annotations_turn_single_policies_off() -> anyhow::Result<()> {
    let s = Scenario::start("opt-out-annotations").await?;

    let no_probes = accepts(
        s.create(
            &bare_statefulset()
                .named("no-probes")
                .annotated("probes.stsguard.io/skip", "true"),
        ),
    )
    .await?;
    assert!(no_probes.no_container_has_probes());
    assert_eq!(no_probes.pod_management_policy(), "Parallel");

    let ordered = accepts(
        s.create(
            &bare_statefulset()
                .named("ordered")
                .annotated("parallel.stsguard.io/ordered", "true"),
        ),
    )
    .await?;
    assert_eq!(ordered.pod_management_policy(), "OrderedReady");
    assert!(ordered.every_container_has_probes());

    let parallel_skipped = accepts(
        s.create(
            &bare_statefulset()
                .named("parallel-skip")
                .annotated("parallel.stsguard.io/skip", "true"),
        ),
    )
    .await?;
    assert_eq!(parallel_skipped.pod_management_policy(), "OrderedReady");

    let claims_skipped = accepts(
        s.create(&statefulset_without_claims().annotated("volume-claims.stsguard.io/skip", "true")),
    )
    .await?;
    assert!(
        !claims_skipped
            .warnings_of("volume-claims", false)
            .is_empty(),
        "skipping volume-claims only turns the denial into a warning: {:#?}",
        claims_skipped.warnings
    );
    Ok(())
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn objects_in_the_webhooks_own_namespace_are_untouched() -> anyhow::Result<()> {
    let s = Scenario::start("own-namespace").await?;
    // Would be denied anywhere stsguard looks.
    let sts = statefulset_without_claims()
        .named(&format!("e2e-{}", &s.namespace[s.namespace.len() - 5..]));

    let stored = accepts(s.create_in_webhook_namespace(&sts).await?).await?;

    assert_eq!(stored.pod_management_policy(), "OrderedReady");
    assert!(stored.no_container_has_probes());
    assert_no_stsguard_warnings("in the webhook's namespace", &stored.warnings);
    Ok(())
}
