//! Signed policies against a real OCI registry (the CNCF distribution registry on
//! 127.0.0.1 with TLS from a test CA): a module signed in cosign's format is
//! served and named with its signer; an unsigned one, one signed by another key,
//! one whose signature covers another digest or lacks a required annotation is
//! refused; a tag moved to an unsigned module keeps the old one serving; with
//! the registry down, signatures verified before come from the cache. And the
//! command line: generate-key-pair, sign, verify, for registry modules and files.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use stsguard_webhook::builtin;
use stsguard_webhook::engine::anatomy::Anatomy;
use stsguard_webhook::registry::{OciReference, Registry, RegistryOptions, Verification};
use stsguard_webhook::server::ConnectionTimeouts;
use stsguard_webhook::signature::{SigningKey, Verifier, build_payload};
use support::registry::{Access, TestRegistry};
use support::{TestServer, eventually, fixture, install_crypto, stsguard};

fn reference(text: &str) -> OciReference {
    text.parse().unwrap()
}

async fn push(registry: &Registry, builtin_name: &str, reference: &str) -> String {
    let bytes = builtin::module(builtin_name).unwrap();
    let anatomy = Anatomy::read(bytes).unwrap();
    registry
        .push(bytes, &anatomy, &self::reference(reference))
        .await
        .unwrap()
}

/// Signs `digest` in `reference`'s repository as `cosign sign --key` does.
async fn sign(
    registry: &Registry,
    reference: &str,
    digest: &str,
    key: &SigningKey,
    annotations: &[(&str, &str)],
) {
    let reference = self::reference(reference);
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let repository = format!("{}/{}", reference.registry, reference.repository);
    let payload = build_payload(&repository, digest, &annotations);
    let signature = BASE64.encode(key.sign(&payload).unwrap());
    let added = registry
        .push_signature(&reference, digest, &payload, &signature, key.public())
        .await
        .unwrap();
    assert!(added);
}

fn key() -> SigningKey {
    SigningKey::generate(b"").unwrap().0
}

fn verification(key: &SigningKey, annotations: &[(&str, &str)], required: bool) -> Verification {
    Verification {
        verifier: Verifier::new(
            vec![key.public().clone()],
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        required,
    }
}

/// The `policy NAME ...` line of /readyz.
async fn readyz_line(server: &TestServer, name: &str) -> String {
    let (_, body) = server.get("/readyz").await;
    body.lines()
        .find(|line| line.starts_with(&format!("policy {name} ")))
        .unwrap_or_else(|| panic!("no line for {name}: {body}"))
        .to_string()
}

/// A config's `verification` section trusting `key` (written beside `dir`).
fn verification_yaml(dir: &Path, key: &SigningKey, extra: &str) -> String {
    let path = dir.join("trusted.pub");
    std::fs::write(&path, key.public().to_pem()).unwrap();
    format!("verification: {{keys: ['{}']{extra}}}\n", path.display())
}

/// A server of `module` as the policy `rule`, trusting `key` (written into
/// `keys`), asking where tags point every 100 ms.
async fn serve_rule(
    registry: &TestRegistry,
    cache: &Path,
    keys: &Path,
    module: &str,
    key: &SigningKey,
) -> TestServer {
    let yaml = format!(
        "{}policies: [{{name: rule, module: '{module}'}}]",
        verification_yaml(keys, key, "")
    );
    TestServer::start_pulling(
        &yaml,
        4,
        ConnectionTimeouts::default(),
        registry.options(Some(cache)),
        Some(Duration::from_millis(100)),
    )
    .await
}

/// Waits until the server has counted a failed reload of its policies.
async fn a_reload_failed(server: &TestServer) {
    eventually("the refused reload is counted", || async {
        let (_, metrics) = server.get("/metrics").await;
        metrics.contains(r#"stsguard_reloads_total{what="policies",result="failure"}"#)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_module_is_served_and_named_with_its_signer() {
    install_crypto();
    let registry = TestRegistry::start(Access::Open);
    let cache = tempfile::tempdir().unwrap();
    let client = registry.client(registry.options(None));
    let tagged = registry.reference("team/parallel:v1");
    let digest = push(&client, "parallel", &tagged).await;
    let signer = key();
    sign(&client, &tagged, &digest, &signer, &[("team", "platform")]).await;

    let keys = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}policies: [{{name: parallel, module: '{tagged}'}}]",
        verification_yaml(keys.path(), &signer, ", annotations: {team: platform}")
    );
    let server = TestServer::start_pulling(
        &yaml,
        4,
        ConnectionTimeouts::default(),
        registry.options(Some(cache.path())),
        None,
    )
    .await;
    let fingerprint = signer.public().fingerprint();
    let line = readyz_line(&server, "parallel").await;
    assert!(
        line.ends_with(&format!("signed by key {fingerprint} team=platform")),
        "{line}"
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(&format!("signer=\"{fingerprint}\"")),
        "{metrics}"
    );
    let response = server
        .review("/mutate", &fixture("reviews/lab-statefulset.create.json"))
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_wrongly_signed_and_moved_signatures_are_refused() {
    install_crypto();
    let registry = TestRegistry::start(Access::Open);
    let client = registry.client(registry.options(None));
    let trusted = key();
    let pull = |text: &str, verification: Verification| {
        let client = registry.client(registry.options(None));
        let reference = reference(text);
        async move {
            client
                .pull_all([&reference], Some(&verification))
                .await
                .map(|pulled| pulled.get(&reference).unwrap().signer.clone())
                .map_err(|error| error.to_string())
        }
    };

    // Not signed at all: the message says what was expected and how to sign.
    let unsigned = registry.reference("team/unsigned:v1");
    let unsigned_digest = push(&client, "probes", &unsigned).await;
    let error = pull(&unsigned, verification(&trusted, &[], true))
        .await
        .unwrap_err();
    assert!(error.contains("modules must be signed"), "{error}");
    assert!(error.contains("it is not signed"), "{error}");
    assert!(
        error.contains(&format!(
            "a signature by key {}",
            trusted.public().fingerprint()
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!("stsguard sign {unsigned}@{unsigned_digest}")),
        "{error}"
    );
    // Not required: served, with no signer.
    assert_eq!(
        pull(&unsigned, verification(&trusted, &[], false)).await,
        Ok(None)
    );

    // Signed, by a key the server does not trust.
    let other = registry.reference("team/other-key:v1");
    let other_digest = push(&client, "parallel", &other).await;
    sign(&client, &other, &other_digest, &key(), &[]).await;
    let error = pull(&other, verification(&trusted, &[], true))
        .await
        .unwrap_err();
    assert!(error.contains("made by another key"), "{error}");

    // A trusted signature of another module, copied onto this one's `.sig`.
    let moved = registry.reference("team/moved:v1");
    let moved_digest = push(&client, "volume-claims", &moved).await;
    let repository = reference(&moved);
    let payload = build_payload(
        &format!("{}/{}", repository.registry, repository.repository),
        &unsigned_digest,
        &BTreeMap::new(),
    );
    let signature = BASE64.encode(trusted.sign(&payload).unwrap());
    client
        .push_signature(
            &repository,
            &moved_digest,
            &payload,
            &signature,
            trusted.public(),
        )
        .await
        .unwrap();
    let error = pull(&moved, verification(&trusted, &[], true))
        .await
        .unwrap_err();
    assert!(
        error.contains(&format!("covers {unsigned_digest}, not this module")),
        "{error}"
    );

    // Signed by the trusted key, without the annotation the server requires;
    // then with it: the second signature joins the first, and verifies.
    let annotated = registry.reference("team/annotated:v1");
    let annotated_digest = push(&client, "parallel", &annotated).await;
    sign(
        &client,
        &annotated,
        &annotated_digest,
        &trusted,
        &[("team", "apps")],
    )
    .await;
    let wanted = verification(&trusted, &[("team", "platform")], true);
    let error = pull(&annotated, wanted.clone()).await.unwrap_err();
    assert!(
        error.contains("without the annotation team=platform"),
        "{error}"
    );
    sign(
        &client,
        &annotated,
        &annotated_digest,
        &trusted,
        &[("team", "platform")],
    )
    .await;
    let signer = pull(&annotated, wanted).await.unwrap().unwrap();
    assert_eq!(signer.key, trusted.public().fingerprint());
    assert_eq!(signer.annotations["team"], "platform");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_moved_to_an_unsigned_module_is_not_served() {
    install_crypto();
    let registry = TestRegistry::start(Access::Open);
    let cache = tempfile::tempdir().unwrap();
    let client = registry.client(registry.options(None));
    let tagged = registry.reference("team/rule:stable");
    let signed = push(&client, "parallel", &tagged).await;
    let trusted = key();
    sign(&client, &tagged, &signed, &trusted, &[]).await;
    let keys = tempfile::tempdir().unwrap();
    let server = serve_rule(&registry, cache.path(), keys.path(), &tagged, &trusted).await;
    assert!(readyz_line(&server, "rule").await.contains(&signed));

    // Someone with push rights but not the key moves the tag.
    let unsigned = push(&client, "probes", &tagged).await;
    a_reload_failed(&server).await;
    let line = readyz_line(&server, "rule").await;
    assert!(
        line.contains(&signed) && !line.contains(&unsigned),
        "{line}"
    );

    // Signed now: served at the next recheck.
    sign(&client, &tagged, &unsigned, &trusted, &[]).await;
    eventually("the signed digest is served", || async {
        readyz_line(&server, "rule").await.contains(&unsigned)
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_registry_down_only_signatures_verified_before_serve() {
    install_crypto();
    let mut registry = TestRegistry::start(Access::Open);
    let cache = tempfile::tempdir().unwrap();
    let client = registry.client(registry.options(None));
    let trusted = key();
    let verified = registry.reference("team/verified:v1");
    let verified_digest = push(&client, "parallel", &verified).await;
    sign(&client, &verified, &verified_digest, &trusted, &[]).await;
    let never_checked = registry.reference("team/never-checked:v1");
    let never_checked_digest = push(&client, "probes", &never_checked).await;
    sign(
        &client,
        &never_checked,
        &never_checked_digest,
        &trusted,
        &[],
    )
    .await;

    // One pulled with verification (its signatures cached), one without.
    let cached = registry.client(registry.options(Some(cache.path())));
    cached
        .pull_all(
            [&reference(&verified)],
            Some(&verification(&trusted, &[], true)),
        )
        .await
        .unwrap();
    cached
        .pull_all([&reference(&never_checked)], None)
        .await
        .unwrap();

    registry.stop();
    let offline = registry.client(RegistryOptions {
        timeout: Duration::from_secs(2),
        ..registry.options(Some(cache.path()))
    });
    let pulled = offline
        .pull_all(
            [&reference(&verified)],
            Some(&verification(&trusted, &[], true)),
        )
        .await
        .unwrap();
    let module = pulled.get(&reference(&verified)).unwrap();
    assert_eq!(
        module.signer.as_ref().unwrap().key,
        trusted.public().fingerprint()
    );
    let error = offline
        .pull_all(
            [&reference(&never_checked)],
            Some(&verification(&trusted, &[], true)),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("its signatures could not be read"),
        "{error}"
    );
    assert!(error.contains("none verified before is cached"), "{error}");
    // A key rotated away while the registry was down: what was cached no
    // longer verifies.
    let error = offline
        .pull_all(
            [&reference(&verified)],
            Some(&verification(&key(), &[], true)),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("modules must be signed"), "{error}");
}

/// `stsguard` with this registry's CA and its own cache.
fn cli(registry: &TestRegistry, cache: &Path) -> std::process::Command {
    let mut command = stsguard();
    command
        .env("STSGUARD_REGISTRY_CA", registry.ca.as_ref().unwrap())
        .env("STSGUARD_CACHE_DIR", cache)
        .env("COSIGN_PASSWORD", "correct horse");
    command
}

fn run(command: &mut std::process::Command) -> (i32, String, String) {
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_generates_keys_signs_and_verifies() {
    install_crypto();
    let registry = TestRegistry::start(Access::Open);
    let client = registry.client(registry.options(None));
    let tagged = registry.reference("team/cli:v1");
    let digest = push(&client, "parallel", &tagged).await;
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let prefix = work.path().join("team");

    let (code, fingerprint, stderr) = run(cli(&registry, &cache)
        .args(["generate-key-pair", "--output-key-prefix"])
        .arg(&prefix));
    assert_eq!(code, 0, "{stderr}");
    assert!(fingerprint.starts_with("sha256:"), "{fingerprint}");
    let (code, _, stderr) = run(cli(&registry, &cache)
        .args(["generate-key-pair", "--output-key-prefix"])
        .arg(&prefix));
    assert_eq!(code, 2);
    assert!(stderr.contains("never overwrites a key"), "{stderr}");
    let (private, public) = (work.path().join("team.key"), work.path().join("team.pub"));

    // Before signing: not verified, exit 1.
    let verify = |annotation: Option<&str>| {
        let mut command = cli(&registry, &cache);
        command.args(["verify", &tagged, "--key"]).arg(&public);
        if let Some(annotation) = annotation {
            command.args(["-a", annotation]);
        }
        run(&mut command)
    };
    let (code, stdout, _) = verify(None);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("not verified: it is not signed"),
        "{stdout}"
    );

    let (code, _, stderr) = run(cli(&registry, &cache)
        .env("COSIGN_PASSWORD", "wrong")
        .args(["sign", &tagged, "--key"])
        .arg(&private));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("does not open with this password"),
        "{stderr}"
    );
    let (code, stdout, stderr) = run(cli(&registry, &cache)
        .args(["sign", &tagged, "-a", "team=platform", "--key"])
        .arg(&private));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), format!("{tagged}@{digest}"));

    let (code, stdout, _) = verify(Some("team=platform"));
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains(&format!(
            "verified, signed by key {} team=platform",
            fingerprint.trim()
        )),
        "{stdout}"
    );
    let (code, stdout, _) = verify(Some("team=apps"));
    assert_eq!(code, 1, "{stdout}");

    // A module file: FILE.sig beside it; a changed byte fails.
    let file = work.path().join("rule.wasm");
    std::fs::write(&file, builtin::module("probes").unwrap()).unwrap();
    let (code, stdout, stderr) = run(cli(&registry, &cache)
        .args(["sign", "--key"])
        .arg(&private)
        .arg(&file));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), format!("{}.sig", file.display()));
    let verify_file = || {
        run(cli(&registry, &cache)
            .args(["verify", "--key"])
            .arg(&public)
            .arg(&file))
    };
    assert_eq!(verify_file().0, 0);
    let (code, _, stderr) = run(cli(&registry, &cache)
        .args(["sign", "-a", "team=platform", "--key"])
        .arg(&private)
        .arg(&file));
    assert_eq!(code, 2);
    assert!(stderr.contains("carries no annotations"), "{stderr}");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let (code, stdout, _) = verify_file();
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("not verified"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn module_files_are_checked_when_files_must_be_signed() {
    install_crypto();
    let work = tempfile::tempdir().unwrap();
    let trusted = key();
    let module = work.path().join("rule.wasm");
    std::fs::write(&module, builtin::module("parallel").unwrap()).unwrap();
    let config = work.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "{}policies: [{{name: rule, module: '{}'}}]\n",
            verification_yaml(work.path(), &trusted, ", files: true"),
            module.display()
        ),
    )
    .unwrap();
    let compile = || {
        run(stsguard()
            .env("STSGUARD_CACHE_DIR", work.path().join("cache"))
            .args(["compile", "--config"])
            .arg(&config))
    };
    let (code, _, stderr) = compile();
    assert_eq!(code, 2);
    assert!(
        stderr.contains("module files must be signed (verification.files)"),
        "{stderr}"
    );
    assert!(stderr.contains("rule.wasm.sig"), "{stderr}");

    let signature = BASE64.encode(trusted.sign(&std::fs::read(&module).unwrap()).unwrap());
    std::fs::write(work.path().join("rule.wasm.sig"), &signature).unwrap();
    let (code, stdout, stderr) = compile();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("compiled rule"), "{stdout}");

    let other = BASE64.encode(key().sign(&std::fs::read(&module).unwrap()).unwrap());
    std::fs::write(work.path().join("rule.wasm.sig"), other).unwrap();
    let (code, _, stderr) = compile();
    assert_eq!(code, 2);
    assert!(stderr.contains("does not verify"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_refuses_to_start_with_an_unsigned_module() {
    install_crypto();
    let registry = TestRegistry::start(Access::Open);
    let client = registry.client(registry.options(None));
    let tagged = registry.reference("team/unsigned:v1");
    push(&client, "parallel", &tagged).await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "{}policies: [{{name: rule, module: '{tagged}'}}]\n",
            verification_yaml(work.path(), &key(), "")
        ),
    )
    .unwrap();
    let (code, _, stderr) = run(cli(&registry, &work.path().join("cache"))
        .args(["compile", "--config"])
        .arg(&config));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("refused: modules must be signed"),
        "{stderr}"
    );

    // A key that is not a key: named, with its index.
    std::fs::write(work.path().join("trusted.pub"), "not a key").unwrap();
    let (code, _, stderr) = run(cli(&registry, &work.path().join("cache"))
        .args(["compile", "--config"])
        .arg(&config));
    assert_eq!(code, 2);
    assert!(stderr.contains("verification.keys[0]"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_re_verifies_and_a_later_signature_is_picked_up() {
    install_crypto();
    let registry = TestRegistry::start(Access::Open);
    let cache = tempfile::tempdir().unwrap();
    let client = registry.client(registry.options(None));
    let tagged = registry.reference("team/rule:v1");
    let digest = push(&client, "parallel", &tagged).await;
    let pinned = format!("{tagged}@{digest}");
    let (old, new) = (key(), key());
    sign(&client, &tagged, &digest, &old, &[]).await;
    let keys = tempfile::tempdir().unwrap();
    let server = serve_rule(&registry, cache.path(), keys.path(), &pinned, &old).await;
    let signed_by = |key: &SigningKey| format!("signed by key {}", key.public().fingerprint());
    assert!(
        readyz_line(&server, "rule")
            .await
            .ends_with(&signed_by(&old))
    );

    // The old key is replaced: the module it signed no longer verifies, and the
    // set it is in keeps serving, as after any failed reload.
    std::fs::write(keys.path().join("trusted.pub"), new.public().to_pem()).unwrap();
    a_reload_failed(&server).await;
    assert!(
        readyz_line(&server, "rule")
            .await
            .ends_with(&signed_by(&old))
    );

    // Signed with the new key: no file or tag changes, and the failed reload is
    // tried again until it loads.
    sign(&client, &tagged, &digest, &new, &[]).await;
    eventually("the new key's signature is served", || async {
        readyz_line(&server, "rule")
            .await
            .ends_with(&signed_by(&new))
    })
    .await;
    server.stop().await;
}
