//! Registry credentials from a Docker `config.json`: the format of the
//! `kubernetes.io/dockerconfigjson` Secrets that clusters already hold for their
//! image pulls, so the same Secret serves stsguard's policy pulls.
//!
//! Only `auths` is read: `auth` as base64 `user:password`, or `username` and
//! `password` (an `identitytoken`, an OAuth refresh token, is not used). They are
//! sent to the registry as basic auth, or to its token service when it answers
//! with a bearer challenge. Credential helpers (`credsStore`, `credHelpers`) run programs a
//! Pod does not have; a host that names one is an error that says so, rather
//! than an anonymous pull that fails later with a 401.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// The credentials of one config file, keyed by registry host.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    /// Where they were read from, for messages.
    source: Option<PathBuf>,
    by_host: BTreeMap<String, Login>,
    helpers: BTreeMap<String, String>,
}

#[derive(Clone)]
struct Login {
    username: String,
    password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({}, <password>)", self.username)
    }
}

/// What is sent to one registry, and how to name it in a message.
#[derive(Debug, Clone)]
pub struct Credential {
    pub auth: RegistryAuth,
    /// `anonymous`, or `user "NAME" from FILE`.
    pub described: String,
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// Reads `path`, which must exist when it is given.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            format!(
                "could not read the registry credentials {}: {error}",
                path.display()
            )
        })?;
        Self::parse(&text, Some(path))
            .map_err(|error| format!("registry credentials {}: {error}", path.display()))
    }

    /// The default file when it exists (`$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`, as docker and podman login write it); none
    /// (anonymous) otherwise.
    pub fn load_default() -> Result<Self, String> {
        let path = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))
            .map(|dir| dir.join("config.json"));
        match path {
            Some(path) if path.exists() => Self::load(&path),
            _ => Ok(Self::default()),
        }
    }

    fn parse(text: &str, source: Option<&Path>) -> Result<Self, String> {
        let file: ConfigFile = serde_json::from_str(text)
            .map_err(|error| format!("not a Docker config.json: {error}"))?;
        let mut by_host = BTreeMap::new();
        for (key, entry) in file.auths {
            let host = host_of(&key);
            let login = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => decode_auth(&auth).ok_or_else(|| {
                    format!("auths.\"{key}\".auth is not base64 of `user:password`")
                })?,
                (_, Some(username), Some(password)) => Login { username, password },
                // An empty entry (what `docker login` leaves beside a credsStore).
                _ => continue,
            };
            by_host.insert(host, login);
        }
        let mut helpers: BTreeMap<String, String> = file
            .cred_helpers
            .into_iter()
            .map(|(key, helper)| (host_of(&key), helper))
            .collect();
        if let Some(store) = file.creds_store {
            helpers.insert(String::new(), store);
        }
        Ok(Self {
            source: source.map(Path::to_path_buf),
            by_host,
            helpers,
        })
    }

    /// What to send to `registry` (`HOST[:PORT]`).
    pub fn for_registry(&self, registry: &str) -> Result<Credential, String> {
        let source = self
            .source
            .as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_default();
        if let Some(login) = self.by_host.get(registry) {
            return Ok(Credential {
                auth: RegistryAuth::Basic(login.username.clone(), login.password.clone()),
                described: format!("user \"{}\" from {source}", login.username),
            });
        }
        if let Some(helper) = self.helpers.get(registry).or_else(|| self.helpers.get("")) {
            return Err(format!(
                "{source} leaves the credentials of {registry} to the credential helper \
                 `docker-credential-{helper}`, which stsguard does not run; put them in \
                 `auths` (a kubernetes.io/dockerconfigjson Secret has them there)"
            ));
        }
        Ok(Credential {
            auth: RegistryAuth::Anonymous,
            described: match &self.source {
                Some(path) => format!("anonymous (no entry for {registry} in {})", path.display()),
                None => "anonymous (no registry credentials configured)".into(),
            },
        })
    }
}

/// `https://host:port/v1/`, `host:port` and the like: the `HOST[:PORT]` a key names.
fn host_of(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    // Docker Hub's historical key names the index, not the registry.
    if host == "index.docker.io" {
        "docker.io".into()
    } else {
        host.to_string()
    }
}

fn decode_auth(auth: &str) -> Option<Login> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (username, password) = text.split_once(':')?;
    Some(Login {
        username: username.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(credential: &Credential) -> (String, String) {
        match &credential.auth {
            RegistryAuth::Basic(user, password) => (user.clone(), password.clone()),
            other => panic!("not basic auth: {other:?}"),
        }
    }

    #[test]
    fn a_dockerconfigjson_secret_is_read_by_host() {
        // `kubectl create secret docker-registry` writes both `auth` and the parts.
        let text = r#"{"auths": {
            "registry.example.com:5000": {"username": "ci", "password": "s3cret", "auth": "Y2k6czNjcmV0"},
            "https://other.example.com/v1/": {"auth": "dGVhbTpwYTpzcw=="},
            "empty.example.com": {}
        }}"#;
        let credentials =
            Credentials::parse(text, Some(Path::new("/etc/stsguard/registry/config.json")))
                .unwrap();
        let credential = credentials
            .for_registry("registry.example.com:5000")
            .unwrap();
        assert_eq!(basic(&credential), ("ci".into(), "s3cret".into()));
        assert_eq!(
            credential.described,
            "user \"ci\" from /etc/stsguard/registry/config.json"
        );
        // A password may hold a `:`.
        let other = credentials.for_registry("other.example.com").unwrap();
        assert_eq!(basic(&other), ("team".into(), "pa:ss".into()));
        let anonymous = credentials.for_registry("empty.example.com").unwrap();
        assert!(matches!(anonymous.auth, RegistryAuth::Anonymous));
        assert!(
            anonymous
                .described
                .contains("no entry for empty.example.com"),
            "{}",
            anonymous.described
        );
        assert!(
            !format!("{credentials:?}").contains("s3cret"),
            "passwords are not in Debug output"
        );
    }

    #[test]
    fn helpers_and_bad_files_are_errors() {
        let helpers = Credentials::parse(r#"{"credHelpers": {"gcr.io": "gcloud"}}"#, None).unwrap();
        let error = helpers.for_registry("gcr.io").unwrap_err();
        assert!(error.contains("docker-credential-gcloud"), "{error}");
        assert!(helpers.for_registry("example.com").is_ok());
        let store = Credentials::parse(r#"{"auths": {"a.io": {}}, "credsStore": "desktop"}"#, None)
            .unwrap();
        assert!(
            store
                .for_registry("a.io")
                .unwrap_err()
                .contains("docker-credential-desktop")
        );

        let error =
            Credentials::parse(r#"{"auths": {"a.io": {"auth": "%%%"}}}"#, None).unwrap_err();
        assert!(
            error.contains("auths.\"a.io\".auth is not base64"),
            "{error}"
        );
        let error = Credentials::parse("[1]", None).unwrap_err();
        assert!(error.contains("not a Docker config.json"), "{error}");
    }
}
