//! Out-of-cluster stsguard: the binary started on a free port with a certificate made
//! for the occasion, and the MutatingWebhookConfiguration that points the API server
//! at it by URL.

use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A running `stsguard serve`, killed on drop.
pub struct LocalWebhook {
    child: Child,
    dir: TempDir,
    /// `https://HOST:PORT`
    pub base_url: String,
    /// PEM of the CA that signed the serving certificate.
    pub ca_pem: String,
}

/// The serving certificate: a CA and a leaf for the webhook's IP address.
pub(crate) struct Certificates {
    pub(crate) ca_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

pub(crate) fn certificates(host: IpAddr) -> anyhow::Result<Certificates> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "stsguard-e2e CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![host.to_string()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, host.to_string());
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Certificates {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

pub(crate) fn free_port(host: IpAddr) -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::new(host, 0)).with_context(|| {
        format!("no free port on {host} (is STSGUARD_E2E_WEBHOOK_HOST an address of this machine?)")
    })?;
    Ok(listener.local_addr()?.port())
}

fn write(path: PathBuf, contents: &str) -> anyhow::Result<PathBuf> {
    fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

impl LocalWebhook {
    /// Starts `bin serve` on `host` with the configuration `config` (YAML) and waits
    /// until `/readyz` answers 200 over HTTPS.
    pub async fn start(bin: &Path, host: IpAddr, config: &str) -> anyhow::Result<Self> {
        Self::start_with_env(bin, host, config, &[]).await
    }

    /// [`LocalWebhook::start`] with more environment variables (`KUBECONFIG` of
    /// another identity or cluster).
    pub async fn start_with_env(
        bin: &Path,
        host: IpAddr,
        config: &str,
        env: &[(&str, &Path)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("stsguard-e2e-").tempdir()?;
        let certs = certificates(host)?;
        let cert = write(dir.path().join("tls.crt"), &certs.cert_pem)?;
        let key = write(dir.path().join("tls.key"), &certs.key_pem)?;
        let config_file = write(dir.path().join("config.yaml"), config)?;
        // One compilation cache for every scenario: each would otherwise compile
        // every policy again (seconds each). wasmtime's cache is safe to share.
        let cache = crate::cluster::target_dir().join("stsguard-e2e-cache");
        fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
        let log_path = dir.path().join("stsguard.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;

        let port = free_port(host)?;
        let listen = SocketAddr::new(host, port);
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&config_file)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--log-format")
            .arg("text")
            .env(
                "STSGUARD_LOG",
                std::env::var("STSGUARD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;

        let mut webhook = LocalWebhook {
            child,
            dir,
            base_url: format!("https://{listen}"),
            ca_pem: certs.ca_pem,
        };
        webhook.wait_ready(Duration::from_secs(60)).await?;
        Ok(webhook)
    }

    /// An HTTPS client trusting the webhook's CA.
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes())?)
            .timeout(Duration::from_secs(5))
            .build()?)
    }

    /// `GET path`: the status and the body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = self
            .client()?
            .get(format!("{}{path}", self.base_url))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// `POST /mutate` of an AdmissionReview: its `response`.
    pub async fn review(&self, review: &Value) -> anyhow::Result<Value> {
        let response = self
            .client()?
            .post(format!("{}/mutate", self.base_url))
            .json(review)
            .send()
            .await?;
        let body: Value = response.json().await?;
        Ok(body["response"].clone())
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = self.client()?;
        let url = format!("{}/readyz", self.base_url);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "stsguard exited ({status}) before it was ready; its log:\n{}",
                    self.log()
                );
            }
            let last = match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => format!(
                    "{} {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "stsguard at {url} was not ready after {timeout:?} (last: {last}); its log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The server's log so far (its last 60 lines).
    pub fn log(&self) -> String {
        let text = fs::read_to_string(self.dir.path().join("stsguard.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for LocalWebhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The MutatingWebhookConfiguration for a local webhook: the chart's rules, selectors
/// and settings, with `url` instead of a Service, limited to the namespaces labelled
/// `stsguard-e2e.io/run=<run>` so that concurrent scenarios never see each other.
pub fn configuration(
    name: &str,
    url: &str,
    ca_pem: &str,
    run: &str,
    excluded: &[&str],
) -> anyhow::Result<MutatingWebhookConfiguration> {
    let config: Value = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": name,
            "labels": { "app.kubernetes.io/part-of": "stsguard-e2e", "stsguard-e2e.io/run": run },
        },
        "webhooks": [{
            "name": "statefulsets.e2e.stsguard.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "timeoutSeconds": 10,
            "failurePolicy": "Fail",
            "reinvocationPolicy": "IfNeeded",
            "matchPolicy": "Equivalent",
            "clientConfig": { "url": url, "caBundle": BASE64.encode(ca_pem) },
            "rules": [{
                "apiGroups": ["apps"],
                "apiVersions": ["v1"],
                "resources": ["statefulsets"],
                "operations": ["CREATE", "UPDATE"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": {
                "matchLabels": { "stsguard-e2e.io/run": run },
                "matchExpressions": [{
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": excluded,
                }],
            },
            "objectSelector": {
                "matchExpressions": [{ "key": "stsguard.io/ignore", "operator": "NotIn", "values": ["true"] }],
            },
        }],
    });
    Ok(serde_json::from_value(config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_is_for_the_ip_and_signed_by_the_ca() {
        let certs = certificates(IpAddr::from([127, 0, 0, 1])).unwrap();
        assert!(certs.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(certs.key_pem.contains("PRIVATE KEY"));
        assert_ne!(certs.ca_pem, certs.cert_pem);
    }

    #[test]
    fn configuration_mirrors_the_chart() {
        let c = configuration(
            "x",
            "https://127.0.0.1:1/mutate",
            "PEM",
            "run1",
            &["own", "kube-system"],
        )
        .unwrap();
        let hook = &c.webhooks.unwrap()[0];
        assert_eq!(hook.side_effects, "None");
        assert_eq!(hook.admission_review_versions, ["v1"]);
        assert_eq!(hook.client_config.ca_bundle.as_ref().unwrap().0, b"PEM");
        let excluded = &hook
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(excluded.key, "kubernetes.io/metadata.name");
        assert_eq!(
            excluded.values.as_deref(),
            Some(&["own".to_string(), "kube-system".to_string()][..])
        );
    }
}
