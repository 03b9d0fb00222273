//! Policies from a real OCI registry (the CNCF distribution registry, started on
//! 127.0.0.1 with TLS from a test CA): push then serve, the cache when the
//! registry is down, digests that do not match, a tag that moves, artifacts that
//! are not policies, the size limit, credentials, and a registry that does not
//! answer.

mod support;

use std::time::Duration;

use serde_json::Value;
use stsguard_webhook::builtin;
use stsguard_webhook::engine::anatomy::Anatomy;
use stsguard_webhook::registry::{OciReference, Origin, Registry, RegistryOptions};
use stsguard_webhook::server::ConnectionTimeouts;
use support::registry::{Access, TestRegistry, USER};
use support::{TestServer, eventually, fixture};

fn component(name: &str) -> &'static [u8] {
    builtin::module(name).unwrap()
}

async fn push(registry: &Registry, bytes: &[u8], reference: &str) -> String {
    let anatomy = Anatomy::read(bytes).unwrap();
    registry
        .push(bytes, &anatomy, &reference.parse().unwrap())
        .await
        .unwrap()
}

fn reference(text: &str) -> OciReference {
    text.parse().unwrap()
}

fn lab_review() -> Value {
    fixture("reviews/lab-statefulset.create.json")
}

/// The `policy ...` line of /readyz for `name`.
async fn readyz_line(server: &TestServer, name: &str) -> String {
    let (_, body) = server.get("/readyz").await;
    body.lines()
        .find(|line| line.starts_with(&format!("policy {name} ")))
        .unwrap_or_else(|| panic!("no line for {name}: {body}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pushed_policy_is_served_pinned_to_its_digest() {
    install_crypto();
    let registry = TestRegistry::start(Access::Open);
    let cache = tempfile::tempdir().unwrap();
    let client = registry.client(registry.options(Some(cache.path())));
    let tagged = registry.reference("team/parallel:v1");
    let digest = push(&client, component("parallel"), &tagged).await;
    assert!(digest.starts_with("sha256:"), "{digest}");

    let yaml = format!("policies: [{{name: parallel, module: '{tagged}'}}]");
    let server = TestServer::start_pulling(
        &yaml,
        4,
        ConnectionTimeouts::default(),
        registry.options(Some(cache.path())),
        None,
    )
    .await;
    let response = server.review("/mutate", &lab_review()).await;
    assert_eq!(response["allowed"], true);
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("podManagementPolicy"),
        "{response}"
    );
    let line = readyz_line(&server, "parallel").await;
    assert!(line.contains(&format!("{tagged}@{digest}")), "{line}");
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "stsguard_policy_module{{policy=\"parallel\",source=\"{tagged}@{digest}\""
        )),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_registry_down_what_was_pulled_is_served_from_the_cache() {
    install_crypto();
    let mut registry = TestRegistry::start(Access::Open);
    let cache = tempfile::tempdir().unwrap();
    let tagged = registry.reference("team/probes:v1");
    let digest = push(
        &registry.client(registry.options(None)),
        component("probes"),
        &tagged,
    )
    .await;
    let first = registry
        .client(registry.options(Some(cache.path())))
        .pull(&reference(&tagged))
        .await
        .unwrap();
    assert_eq!(first.origin, Origin::Registry);
    assert_eq!(first.digest(), digest);
    assert_eq!(&*first.bytes, component("probes"));

    registry.stop();
    // A new process: a new client, the same cache.
    let client = registry.client(RegistryOptions {
        timeout: Duration::from_secs(2),
        ..registry.options(Some(cache.path()))
    });
    let by_tag = client.pull(&reference(&tagged)).await.unwrap();
    assert_eq!(by_tag.origin, Origin::CacheRegistryDown);
    assert_eq!(by_tag.digest(), digest);
    let pinned = format!("{tagged}@{digest}");
    let by_digest = client.pull(&reference(&pinned)).await.unwrap();
    assert_eq!(by_digest.origin, Origin::Cache);
    assert_eq!(&*by_digest.bytes, component("probes"));

    let never = client
        .pull(&reference(&registry.reference("team/other:v1")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        never.contains(&format!("could not reach {}", registry.host)),
        "{never}"
    );
    assert!(never.contains("never pulled before"), "{never}");

    // The server starts and serves from the cache.
    let yaml = format!("policies: [{{name: probes, module: '{tagged}'}}]");
    let server = TestServer::start_pulling(
        &yaml,
        4,
        ConnectionTimeouts::default(),
        RegistryOptions {
            timeout: Duration::from_secs(2),
            ..registry.options(Some(cache.path()))
        },
        None,
    )
    .await;
    let line = readyz_line(&server, "probes").await;
    assert!(line.contains(&digest), "{line}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_digest_the_repository_does_not_serve_is_refused() {
    install_crypto();
    let registry = TestRegistry::start(Access::Open);
    let client = registry.client(registry.options(None));
    push(
        &client,
        component("probes"),
        &registry.reference("team/rule:v1"),
    )
    .await;
    let other = push(
        &client,
        component("parallel"),
        &registry.reference("team/other:v1"),
    )
    .await;
    let wrong = format!("{}@{other}", registry.reference("team/rule:v1"));
    let error = client
        .pull(&reference(&wrong))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.starts_with(&wrong), "{error}");
    assert!(
        error.contains(&format!("has no manifest {other} in repository team/rule")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn content_that_does_not_match_the_pinned_digest_is_refused() {
    install_crypto();
    // A registry that answers every manifest request with the same manifest,
    // whatever digest was asked for: what a compromised or broken mirror does.
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.wasm.config.v0+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;
    let router = axum::Router::new()
        .route("/v2/", axum::routing::get(|| async { "{}" }))
        .route(
            "/v2/team/rule/manifests/{reference}",
            axum::routing::get(move || async move {
                (
                    [("content-type", "application/vnd.oci.image.manifest.v1+json")],
                    manifest.as_slice(),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = Registry::new(RegistryOptions {
        insecure: vec![host.clone()],
        ..RegistryOptions::default()
    })
    .unwrap();
    let pinned = format!("oci://{host}/team/rule:v1@sha256:{}", "ab".repeat(32));
    let error = client
        .pull(&reference(&pinned))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("digest mismatch: the reference pins sha256:abab"),
        "{error}"
    );
    assert!(error.contains("is not run"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_tag_is_served_once_its_new_digest_loads() {
    install_crypto();
    let registry = TestRegistry::start(Access::Open);
    let cache = tempfile::tempdir().unwrap();
    let client = registry.client(registry.options(None));
    let tagged = registry.reference("team/rule:stable");
    let first = push(&client, component("parallel"), &tagged).await;
    let yaml = format!("policies: [{{name: rule, module: '{tagged}'}}]");
    let server = TestServer::start_pulling(
        &yaml,
        4,
        ConnectionTimeouts::default(),
        registry.options(Some(cache.path())),
        Some(Duration::from_millis(100)),
    )
    .await;
    assert!(readyz_line(&server, "rule").await.contains(&first));

    // A module that is no policy: the tag moves, the set does not load, and the
    // old digest keeps serving.
    let not_a_policy = b"\0asm\x01\0\0\0";
    let broken = push(&client, not_a_policy, &tagged).await;
    eventually("the failed reload is counted", || async {
        let (_, metrics) = server.get("/metrics").await;
        metrics.contains(r#"stsguard_reloads_total{what="policies",result="failure"}"#)
    })
    .await;
    let line = readyz_line(&server, "rule").await;
    assert!(line.contains(&first) && !line.contains(&broken), "{line}");
    let response = server.review("/mutate", &lab_review()).await;
    assert_eq!(response["allowed"], true, "still served: {response}");

    let second = push(&client, component("probes"), &tagged).await;
    eventually("the new digest is served", || async {
        readyz_line(&server, "rule").await.contains(&second)
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_that_are_not_policies_and_oversized_ones_are_refused() {
    install_crypto();
    let registry = TestRegistry::start(Access::Open);
    let client = registry.client(registry.options(None));
    let image = registry.reference("team/app:1.0");
    push_container_image(&registry, &image).await;
    let error = client
        .pull(&reference(&image))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("it is a container image"), "{error}");

    let tagged = registry.reference("team/probes:v1");
    push(&client, component("probes"), &tagged).await;
    let small = registry.client(RegistryOptions {
        max_module_bytes: 1000,
        ..registry.options(None)
    });
    let error = small
        .pull(&reference(&tagged))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!(
            "its component is {} bytes, over the limit of 1000 bytes",
            component("probes").len()
        )),
        "{error}"
    );
    assert!(error.contains("refused before downloading it"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_used_and_a_401_says_which_were_tried() {
    install_crypto();
    let registry = TestRegistry::start(Access::Password);
    let tagged = registry.reference("team/probes:v1");
    let right = registry.client(registry.options_as(None, USER.0, USER.1));
    let digest = push(&right, component("probes"), &tagged).await;
    let pulled = right.pull(&reference(&tagged)).await.unwrap();
    assert_eq!(pulled.digest(), digest);

    let anonymous = registry.client(registry.options(None));
    let error = anonymous
        .pull(&reference(&tagged))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("401 Unauthorized: it needs credentials"),
        "{error}"
    );
    assert!(error.contains("anonymous"), "{error}");
    assert!(error.contains("--registry-auth"), "{error}");

    let wrong = registry.client(registry.options_as(None, USER.0, "wrong"));
    let error = wrong
        .pull(&reference(&tagged))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("401 Unauthorized to user \"ci\" from"),
        "{error}"
    );
    assert!(error.contains("the user or password is wrong"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_never_answers_is_bounded_by_the_timeout() {
    install_crypto();
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = silent.local_addr().unwrap().to_string();
    let _accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let client = Registry::new(RegistryOptions {
        timeout: Duration::from_millis(500),
        ..RegistryOptions::default()
    })
    .unwrap();
    let error = client
        .pull(&reference(&format!("oci://{host}/team/probes:v1")))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(&host), "{error}");
    assert!(
        error.contains("within 500ms")
            || error.contains("timed out")
            || error.contains("could not reach"),
        "{error}"
    );

    // The server's first load fails with that error instead of waiting forever.
    let yaml = format!("policies: [{{name: probes, module: 'oci://{host}/team/probes:v1'}}]");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let output = support::stsguard()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--registry-timeout",
            "500ms",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--tls-dir")
        .arg(dir.path().join("tls"))
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("could not pull a policy module"),
        "{stderr}"
    );
    assert!(stderr.contains(&host), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_only_for_registries_listed_as_insecure() {
    install_crypto();
    let registry = TestRegistry::start_plain();
    let tagged = registry.reference("team/probes:v1");
    let insecure = registry.client(registry.options(None));
    let digest = push(&insecure, component("probes"), &tagged).await;
    assert_eq!(
        insecure.pull(&reference(&tagged)).await.unwrap().digest(),
        digest
    );

    let strict = registry.client(RegistryOptions {
        insecure: Vec::new(),
        ..registry.options(None)
    });
    let error = strict
        .pull(&reference(&tagged))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("--insecure-registry"), "{error}");
}

/// Pushes what `docker push` would: an OCI image manifest with an image config
/// and a tar layer.
async fn push_container_image(registry: &TestRegistry, text: &str) {
    use oci_client::client::{Config, ImageLayer};
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        extra_root_certificates: vec![oci_client::client::Certificate {
            encoding: oci_client::client::CertificateEncoding::Pem,
            data: std::fs::read(registry.ca.as_ref().unwrap()).unwrap(),
        }],
        ..Default::default()
    });
    let target = reference(text);
    let image = oci_client::Reference::with_tag(
        target.registry.clone(),
        target.repository.clone(),
        target.tag.clone().unwrap(),
    );
    let layer = ImageLayer::oci_v1(b"not really a tar".to_vec(), None);
    let config = Config::oci_v1(br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), None);
    client
        .push(
            &image,
            &[layer],
            config,
            &oci_client::secrets::RegistryAuth::Anonymous,
            None,
        )
        .await
        .unwrap();
}

fn install_crypto() {
    support::install_crypto();
}
