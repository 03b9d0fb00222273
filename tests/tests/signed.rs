//! Signed policies, end to end: a policy pushed to a real OCI registry (the CNCF
//! distribution registry, Debian's `docker-registry`, on 127.0.0.1) and signed
//! with `stsguard sign` judges StatefulSets sent to a real API server, with its
//! signer on /readyz; a module nobody signed never makes the server ready.
//! Out-of-cluster only (the registry runs on this machine); needs no nodes.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use stsguard_e2e::admission::Outcome;
use stsguard_e2e::cluster::{stsguard_bin, target_dir};
use stsguard_e2e::fixtures::statefulset_without_claims;
use stsguard_e2e::scenario::Policies;
use stsguard_e2e::webhook::LocalWebhook;
use stsguard_e2e::{Cluster, Mode, Scenario, skip};

const TEST: &str = "a_signed_policy_from_a_registry_judges_statefulsets";

/// A registry on a free port of 127.0.0.1, plain HTTP, killed on drop.
struct Registry {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> anyhow::Result<Self> {
        let binary = std::env::var_os("STSGUARD_TEST_REGISTRY")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("docker-registry"));
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\n\
                 storage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: '{host}'}}\n",
                dir.path().join("storage").display()
            ),
        )?;
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "could not start {} (./dev e2e installs docker-registry; or point \
                     STSGUARD_TEST_REGISTRY at the binary)",
                    binary.display()
                )
            })?;
        let registry = Self {
            child,
            host,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.host).is_err() {
            ensure!(
                Instant::now() < deadline,
                "the registry did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `stsguard ARGS` with the registry reachable over plain HTTP; its stdout.
fn stsguard(registry: &Registry, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(stsguard_bin()?)
        .args(args)
        .env("STSGUARD_INSECURE_REGISTRIES", &registry.host)
        .env("STSGUARD_CACHE_DIR", dir.join("cache"))
        .env("COSIGN_PASSWORD", "e2e")
        .current_dir(dir)
        .output()?;
    ensure!(
        output.status.success(),
        "stsguard {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// A built-in policy's component, as the webhook's build script left it.
fn policy(name: &str) -> anyhow::Result<String> {
    let path = target_dir().join(format!(
        "wasm-policies/wasm32-wasip2/policy/policy_{name}.wasm"
    ));
    if !path.is_file() {
        bail!("no {}: build the webhook first", path.display());
    }
    Ok(path.display().to_string())
}

fn config(module: &str, key: &Path) -> String {
    format!(
        "requestTimeout: 8s
verification:
  keys: ['{}']
  annotations: {{team: platform}}
policies:
  - {{name: probes, module: \"builtin:probes\"}}
  - {{name: signed-claims, module: '{module}'}}
",
        key.display()
    )
}

#[tokio::test]
#[ignore = "needs a cluster: see tests/README.md"]
async fn a_signed_policy_from_a_registry_judges_statefulsets() -> anyhow::Result<()> {
    let cluster = Cluster::connect().await?;
    let Mode::OutOfCluster { host, .. } = cluster.mode else {
        return skip(
            TEST,
            "out-of-cluster only: the registry it signs in runs on this machine",
        );
    };
    let registry = Registry::start()?;
    let work = tempfile::tempdir()?;
    let dir = work.path();
    let fingerprint = stsguard(&registry, dir, &["generate-key-pair"])?;
    let signed = format!("oci://{}/e2e/claims:v1", registry.host);
    let pinned = stsguard(
        &registry,
        dir,
        &["push", &policy("volume_claims")?, &signed],
    )?;
    let signed_as = stsguard(
        &registry,
        dir,
        &[
            "sign",
            &signed,
            "--key",
            "cosign.key",
            "-a",
            "team=platform",
        ],
    )?;
    assert_eq!(signed_as, pinned);

    let registry_env = [("STSGUARD_INSECURE_REGISTRIES", Path::new(&registry.host))];
    let bin = stsguard_bin()?;
    let webhook = LocalWebhook::start_with_env(
        &bin,
        host,
        &config(&signed, &dir.join("cosign.pub")),
        &registry_env,
    )
    .await?;
    let (_, readyz) = webhook.get("/readyz").await?;
    let line = readyz
        .lines()
        .find(|l| l.starts_with("policy signed-claims "))
        .with_context(|| format!("no line for signed-claims: {readyz}"))?;
    assert!(
        line.starts_with(&format!("policy signed-claims {pinned} sha256:")),
        "{line}"
    );
    assert!(
        line.ends_with(&format!("signed by key {fingerprint} team=platform")),
        "{line}"
    );

    // Through the API server: the signed policy denies what it should.
    let s = Scenario::start_unregistered("signed", Policies::Enforce).await?;
    s.register_url(&format!("{}/mutate", webhook.base_url), &webhook.ca_pem)
        .await?;
    let outcome = s
        .dry_run_until(
            &statefulset_without_claims(),
            "the signed policy's denial",
            |o| matches!(o, Outcome::Denied(d) if d.message.contains("signed-claims")),
        )
        .await?;
    let Outcome::Denied(denial) = outcome else {
        bail!("admitted: {outcome:?}");
    };
    assert!(
        denial.message.contains("volumeClaimTemplates"),
        "{}",
        denial.message
    );

    // Another module, pushed by someone without the key: the server refuses it.
    let unsigned = format!("oci://{}/e2e/parallel:v1", registry.host);
    stsguard(&registry, dir, &["push", &policy("parallel")?, &unsigned])?;
    let refused = LocalWebhook::start_with_env(
        &bin,
        host,
        &config(&unsigned, &dir.join("cosign.pub")),
        &registry_env,
    )
    .await;
    let error = format!("{:#}", refused.err().context("an unsigned module served")?);
    assert!(error.contains("refused: modules must be signed"), "{error}");
    assert!(error.contains("it is not signed"), "{error}");
    Ok(())
}
