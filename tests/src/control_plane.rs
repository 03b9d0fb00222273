//! A throw-away Kubernetes control plane for the suite: etcd and kube-apiserver (and
//! kube-controller-manager when it is there) started as plain processes on free ports
//! of 127.0.0.1, from a folder of binaries, and stopped with their state removed when
//! the [`ControlPlane`] is dropped.
//!
//! The folder follows envtest's convention, `KUBEBUILDER_ASSETS`: `etcd` and
//! `kube-apiserver` (controller-runtime's setup-envtest downloads exactly that), plus
//! `kube-controller-manager` if present. Without the controller manager, namespaces
//! the suite deletes stay `Terminating` (nothing finalizes them) — harmless for a
//! plane that is thrown away, so it is optional.
//!
//! ```text
//!  control-plane CMD...   ──► certificates (rcgen: CA, API server, admin, SA key)
//!                         ──► etcd           127.0.0.1:free   (data in the state dir)
//!                         ──► kube-apiserver 127.0.0.1:free   (RBAC, TokenRequest, webhooks)
//!                         ──► kube-controller-manager          (optional)
//!                         ──► CMD with KUBECONFIG=<state>/admin.kubeconfig
//!                         ◄── stop all, remove the state dir
//! ```
//!
//! Everything is bound to 127.0.0.1, so an out-of-cluster webhook on 127.0.0.1 is
//! reachable from the API server; no node is started, so scenarios that need pods
//! skip and say so.

use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::json;
use tempfile::TempDir;

/// The environment variable naming the folder of binaries (envtest's convention).
pub const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// How long each component may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The binaries a control plane is started from.
#[derive(Debug, Clone)]
pub struct Assets {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: Option<PathBuf>,
}

impl Assets {
    /// The binaries in `dir`; an error names what is missing and where it was looked for.
    pub fn in_dir(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!(
                "{ASSETS_ENV}={} is not a folder: point it at a folder holding etcd and \
                 kube-apiserver (setup-envtest's download, or a build of Kubernetes)",
                dir.display()
            );
        }
        let required = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(anyhow::anyhow!(
                    "{ASSETS_ENV}={} has no `{name}`: the folder must hold etcd and kube-apiserver \
                     (kube-controller-manager is optional)",
                    dir.display()
                ))
            }
        };
        let controller_manager = dir.join("kube-controller-manager");
        Ok(Assets {
            etcd: required("etcd")?,
            kube_apiserver: required("kube-apiserver")?,
            kube_controller_manager: controller_manager.is_file().then_some(controller_manager),
        })
    }

    /// The binaries in `$KUBEBUILDER_ASSETS`.
    pub fn from_env() -> anyhow::Result<Self> {
        let dir = std::env::var_os(ASSETS_ENV).with_context(|| {
            format!(
                "{ASSETS_ENV} is not set: point it at a folder holding etcd and kube-apiserver \
                 (see tests/README.md)"
            )
        })?;
        Self::in_dir(Path::new(&dir))
    }

    /// What each binary says of its version, one line each (for the run's record).
    pub fn versions(&self) -> Vec<String> {
        let mut binaries = vec![&self.kube_apiserver, &self.etcd];
        binaries.extend(&self.kube_controller_manager);
        binaries
            .into_iter()
            .map(|bin| {
                let name = bin.file_name().unwrap_or_default().to_string_lossy();
                let version = Command::new(bin)
                    .arg("--version")
                    .output()
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_string()
                    })
                    .unwrap_or_else(|error| format!("cannot run it: {error}"));
                format!("{name}: {version}")
            })
            .collect()
    }
}

/// The certificates and keys a control plane needs, as PEM.
struct Pki {
    ca_cert: String,
    ca_key: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
    service_account_key: String,
    service_account_public_key: String,
}

impl Pki {
    fn generate() -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "stsguard-e2e kubernetes CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);

        // The names a client may use for the API server, in or out of a pod.
        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
        ])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress(LOCALHOST.into()));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        // The group system:masters is cluster-admin under RBAC's bootstrap policy.
        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "stsguard-e2e-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let service_account = KeyPair::generate()?;
        Ok(Pki {
            ca_cert: ca_cert.pem(),
            ca_key: ca_key_pem,
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            service_account_key: service_account.serialize_pem(),
            service_account_public_key: service_account.public_key_pem(),
        })
    }

    /// A kubeconfig for the admin, with everything embedded.
    fn kubeconfig(&self, server: &str) -> anyhow::Result<String> {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stsguard-e2e", "cluster": {
                "server": server,
                "certificate-authority-data": BASE64.encode(&self.ca_cert),
            }}],
            "users": [{"name": "stsguard-e2e-admin", "user": {
                "client-certificate-data": BASE64.encode(&self.admin_cert),
                "client-key-data": BASE64.encode(&self.admin_key),
            }}],
            "contexts": [{"name": "stsguard-e2e", "context": {
                "cluster": "stsguard-e2e",
                "user": "stsguard-e2e-admin",
                "namespace": "default",
            }}],
            "current-context": "stsguard-e2e",
        });
        Ok(serde_yaml::to_string(&config)?)
    }
}

/// One started binary, its log in the state dir.
struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Component {
    fn start(
        name: &'static str,
        bin: &Path,
        args: &[String],
        state: &Path,
    ) -> anyhow::Result<Self> {
        let log = state.join(format!("{name}.log"));
        let file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Component { name, child, log })
    }

    /// The last lines of the component's log, for an error message.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    }

    /// `Err` with the log's tail when the process has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); the end of its log ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    fn stop(&mut self) {
        // SIGKILL: the state is thrown away, so there is nothing to shut down cleanly.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running control plane; dropping it stops every component and removes its state.
pub struct ControlPlane {
    /// Stopped in reverse order of start.
    components: Vec<Component>,
    state: Option<TempDir>,
    kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub server: String,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("server", &self.server)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

/// A port that was free a moment ago (the kernel hands out ports round-robin, so it is
/// not handed out again soon).
fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind(SocketAddr::from((LOCALHOST, 0))).context("no free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

fn write(path: PathBuf, contents: &str) -> anyhow::Result<PathBuf> {
    fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and (when present) kube-controller-manager, and
    /// waits until the API server's `/readyz` answers `ok` with the admin's kubeconfig.
    pub async fn start(assets: &Assets) -> anyhow::Result<Self> {
        let state = tempfile::Builder::new()
            .prefix("stsguard-e2e-control-plane-")
            .tempdir()
            .context("creating the control plane's state dir")?;
        let dir = state.path().to_path_buf();
        let pki = Pki::generate()?;
        let ca = write(dir.join("ca.crt"), &pki.ca_cert)?;
        let ca_key = write(dir.join("ca.key"), &pki.ca_key)?;
        let serving_cert = write(dir.join("apiserver.crt"), &pki.serving_cert)?;
        let serving_key = write(dir.join("apiserver.key"), &pki.serving_key)?;
        let sa_key = write(dir.join("service-account.key"), &pki.service_account_key)?;
        let sa_public = write(
            dir.join("service-account.pub"),
            &pki.service_account_public_key,
        )?;

        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let apiserver_port = free_port()?;
        let server = format!("https://{LOCALHOST}:{apiserver_port}");
        let kubeconfig = write(dir.join("admin.kubeconfig"), &pki.kubeconfig(&server)?)?;

        let mut plane = ControlPlane {
            components: Vec::new(),
            state: Some(state),
            kubeconfig: kubeconfig.clone(),
            server,
        };

        let etcd_url = format!("http://{LOCALHOST}:{etcd_client}");
        let peer_url = format!("http://{LOCALHOST}:{etcd_peer}");
        let etcd_args = [
            "--name=e2e".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=e2e={peer_url}"),
            "--initial-cluster-state=new".to_string(),
            // The data is thrown away: fsync would only make every write slower.
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        plane
            .components
            .push(Component::start("etcd", &assets.etcd, &etcd_args, &dir)?);
        plane.wait_for_etcd(&etcd_url).await?;

        let issuer = "https://kubernetes.default.svc.cluster.local";
        let apiserver_args = [
            format!("--bind-address={LOCALHOST}"),
            format!("--advertise-address={LOCALHOST}"),
            format!("--secure-port={apiserver_port}"),
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", serving_cert.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--client-ca-file={}", ca.display()),
            "--authorization-mode=RBAC".to_string(),
            format!("--service-account-issuer={issuer}"),
            format!("--api-audiences={issuer}"),
            format!("--service-account-key-file={}", sa_public.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            "--allow-privileged=true".to_string(),
            // No kube-proxy, no endpoints to keep: the `kubernetes` Service is not needed.
            "--endpoint-reconciler-type=none".to_string(),
            "--profiling=false".to_string(),
        ];
        plane.components.push(Component::start(
            "kube-apiserver",
            &assets.kube_apiserver,
            &apiserver_args,
            &dir,
        )?);
        plane.wait_for_apiserver().await?;

        if let Some(bin) = &assets.kube_controller_manager {
            let config = format!("{}", kubeconfig.display());
            let args = [
                format!("--kubeconfig={config}"),
                format!("--authentication-kubeconfig={config}"),
                format!("--authorization-kubeconfig={config}"),
                format!("--bind-address={LOCALHOST}"),
                format!("--secure-port={}", free_port()?),
                format!(
                    "--cert-dir={}",
                    dir.join("controller-manager-certs").display()
                ),
                "--controllers=*".to_string(),
                "--use-service-account-credentials=false".to_string(),
                format!("--service-account-private-key-file={}", sa_key.display()),
                format!("--root-ca-file={}", ca.display()),
                format!("--cluster-signing-cert-file={}", ca.display()),
                format!("--cluster-signing-key-file={}", ca_key.display()),
                "--leader-elect=false".to_string(),
                "--profiling=false".to_string(),
            ];
            plane.components.push(Component::start(
                "kube-controller-manager",
                bin,
                &args,
                &dir,
            )?);
            // It has no readiness to wait for that the suite depends on; a crash at
            // start is reported now rather than as namespaces that never go away.
            tokio::time::sleep(Duration::from_millis(500)).await;
            plane.check_running()?;
        }
        Ok(plane)
    }

    /// The admin kubeconfig (embedded certificates, namespace `default`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `Err` naming the first component that has exited, with its log's tail.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.components
            .iter_mut()
            .try_for_each(Component::check_running)
    }

    /// Keeps the state dir (certificates, etcd data, logs) after the plane stops, and
    /// returns where it is.
    pub fn keep_state(&mut self) -> Option<PathBuf> {
        self.state.take().map(TempDir::keep)
    }

    async fn wait_for_etcd(&mut self, url: &str) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let health = format!("{url}/health");
        self.wait_until("etcd", &health, async |_| {
            let response = client.get(&health).send().await?;
            let body = response.text().await?;
            Ok(body
                .contains("\"health\":\"true\"")
                .then_some(())
                .ok_or(body))
        })
        .await
    }

    async fn wait_for_apiserver(&mut self) -> anyhow::Result<()> {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&self.kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        let readyz = format!("{}/readyz", self.server);
        self.wait_until("kube-apiserver", &readyz, async |_| {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            Ok(match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => Ok(()),
                Ok(body) => Err(body),
                Err(error) => Err(error.to_string()),
            })
        })
        .await
    }

    /// Polls `check` until it says yes, the component exits, or [`START_TIMEOUT`].
    async fn wait_until(
        &mut self,
        component: &str,
        what: &str,
        check: impl AsyncFn(()) -> anyhow::Result<Result<(), String>>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_running()?;
            let last = match check(()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(answer)) => answer,
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() > deadline {
                let tail = self
                    .components
                    .last()
                    .map(Component::log_tail)
                    .unwrap_or_default();
                bail!(
                    "{component} was not ready after {START_TIMEOUT:?} ({what}: {last}); the end of \
                     its log:\n{tail}"
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Starts a control plane from `assets`, runs `command` with `KUBECONFIG` pointing at
/// it, and stops the plane; the command's exit code, or 130 after Ctrl-C. With `keep`,
/// the state dir (logs, certificates, etcd data) is left behind and named.
pub async fn run_command(assets: &Assets, command: &[String], keep: bool) -> anyhow::Result<i32> {
    let (program, args) = command.split_first().context(
        "no command given: e.g. `control-plane cargo test -p stsguard-e2e -- --ignored`",
    )?;
    for line in assets.versions() {
        eprintln!("control-plane: {line}");
    }
    let started = Instant::now();
    let mut plane = ControlPlane::start(assets).await?;
    eprintln!(
        "control-plane: ready at {} in {:.1} s; KUBECONFIG={}",
        plane.server,
        started.elapsed().as_secs_f64(),
        plane.kubeconfig().display()
    );
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", plane.kubeconfig())
        .spawn()
        .with_context(|| format!("starting `{program}`"))?;
    let code = tokio::select! {
        status = child.wait() => status?.code().unwrap_or(1),
        _ = tokio::signal::ctrl_c() => {
            let _ = child.kill().await;
            130
        }
    };
    // A component that died during the run explains failures better than they do.
    if let Err(error) = plane.check_running() {
        eprintln!("control-plane: {error:#}");
    }
    if keep && let Some(dir) = plane.keep_state() {
        eprintln!("control-plane: state kept in {}", dir.display());
    }
    Ok(code)
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for component in self.components.iter_mut().rev() {
            component.stop();
        }
        // The TempDir, if still held, removes the state when dropped after this.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let error = Assets::in_dir(dir.path()).unwrap_err().to_string();
        assert!(error.contains("has no `etcd`"), "{error}");
        fs::write(dir.path().join("etcd"), "").unwrap();
        let error = Assets::in_dir(dir.path()).unwrap_err().to_string();
        assert!(error.contains("has no `kube-apiserver`"), "{error}");
        fs::write(dir.path().join("kube-apiserver"), "").unwrap();
        let assets = Assets::in_dir(dir.path()).unwrap();
        assert!(assets.kube_controller_manager.is_none());
        fs::write(dir.path().join("kube-controller-manager"), "").unwrap();
        assert!(
            Assets::in_dir(dir.path())
                .unwrap()
                .kube_controller_manager
                .is_some()
        );
        let missing = dir.path().join("nothing-here");
        let error = Assets::in_dir(&missing).unwrap_err().to_string();
        assert!(error.contains("is not a folder"), "{error}");
    }

    #[tokio::test]
    async fn kubeconfig_is_read_by_kube_with_the_admin_identity() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pki = Pki::generate().unwrap();
        let text = pki.kubeconfig("https://127.0.0.1:6443").unwrap();
        let kubeconfig: kube::config::Kubeconfig = serde_yaml::from_str(&text).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(config.default_namespace, "default");
        assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1));
        // The client identity loads (a key kube cannot read fails here).
        kube::Client::try_from(config).unwrap();
        assert!(pki.admin_cert.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
