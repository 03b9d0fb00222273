//! A real OCI registry for the tests: the CNCF distribution registry (Debian's
//! `docker-registry` package, which `./dev test` installs), started on
//! 127.0.0.1 with TLS from a test CA and, when asked, basic auth.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stsguard_webhook::registry::credentials::Credentials;
use stsguard_webhook::registry::{Registry, RegistryOptions};
use stsguard_webhook::tls;

pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// The CA that signed its certificate (absent for a plain-HTTP registry).
    pub ca: Option<PathBuf>,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
}

/// A user the registry knows when it was started with auth.
pub const USER: (&str, &str) = ("ci", "s3cret-pass");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone may pull and push.
    Open,
    /// Basic auth (htpasswd) for [`USER`].
    Password,
}

impl TestRegistry {
    /// Starts a registry over TLS.
    pub fn start(access: Access) -> Self {
        Self::start_with(access, true)
    }

    /// Starts a registry over plain HTTP (for `--insecure-registry`).
    pub fn start_plain() -> Self {
        Self::start_with(Access::Open, false)
    }

    fn start_with(access: Access, with_tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut yaml = format!(
            "version: 0.1\n\
             log: {{level: error, accesslog: {{disabled: true}}}}\n\
             storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
             http: {{addr: '{host}'",
            dir.path().join("storage").display()
        );
        let mut ca = None;
        if with_tls {
            let generated = tls::self_signed(&dir.path().join("tls"), &["127.0.0.1".into()])
                .expect("a test certificate is generated");
            yaml.push_str(&format!(
                ", tls: {{certificate: {}, key: {}}}",
                generated.files.cert.display(),
                generated.files.key.display()
            ));
            ca = Some(generated.ca);
        }
        yaml.push_str("}\n");
        if access == Access::Password {
            let htpasswd = dir.path().join("htpasswd");
            let hash = bcrypt::hash(USER.1, 4).unwrap();
            std::fs::write(&htpasswd, format!("{}:{hash}\n", USER.0)).unwrap();
            yaml.push_str(&format!(
                "auth: {{htpasswd: {{realm: stsguard-test, path: {}}}}}\n",
                htpasswd.display()
            ));
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, yaml).unwrap();
        let mut registry = Self {
            host,
            ca,
            dir,
            config,
            child: None,
        };
        registry.resume();
        registry
    }

    /// Stops the registry process (its storage and port are kept for [`Self::resume`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and storage; waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the registry is running");
        let binary = binary();
        let log = std::fs::File::create(self.dir.path().join("registry.log")).unwrap();
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("could not start {}: {error}", binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.host).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the test registry exited ({status}):\n{}",
                    std::fs::read_to_string(self.dir.path().join("registry.log"))
                        .unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the test registry did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `oci://127.0.0.1:PORT/PATH`.
    pub fn reference(&self, path: &str) -> String {
        format!("oci://{}/{path}", self.host)
    }

    /// Options that trust its CA and cache under `cache_dir`.
    pub fn options(&self, cache_dir: Option<&Path>) -> RegistryOptions {
        RegistryOptions {
            ca_bundle: self.ca.clone(),
            insecure: if self.ca.is_none() {
                vec![self.host.clone()]
            } else {
                Vec::new()
            },
            timeout: Duration::from_secs(10),
            cache_dir: cache_dir.map(Path::to_path_buf),
            ..RegistryOptions::default()
        }
    }

    /// [`Self::options`] with credentials for `user` and `password`, written
    /// as a `kubernetes.io/dockerconfigjson` Secret holds them.
    pub fn options_as(
        &self,
        cache_dir: Option<&Path>,
        user: &str,
        password: &str,
    ) -> RegistryOptions {
        let path = self
            .dir
            .path()
            .join(format!("config-{user}-{}.json", password.len()));
        let auth = base64_encode(format!("{user}:{password}").as_bytes());
        std::fs::write(
            &path,
            format!(r#"{{"auths": {{"{}": {{"username": "{user}", "password": "{password}", "auth": "{auth}"}}}}}}"#, self.host),
        )
        .unwrap();
        RegistryOptions {
            credentials: Credentials::load(&path).unwrap(),
            ..self.options(cache_dir)
        }
    }

    pub fn client(&self, options: RegistryOptions) -> Registry {
        Registry::new(options).unwrap()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The registry program: `STSGUARD_TEST_REGISTRY`, else `docker-registry`.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STSGUARD_TEST_REGISTRY") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("docker-registry"))
            .find(|path| path.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the registry tests run the CNCF distribution registry, and `docker-registry` \
             is not installed: `apt-get install docker-registry` (./dev test does), or point \
             STSGUARD_TEST_REGISTRY at the binary"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
