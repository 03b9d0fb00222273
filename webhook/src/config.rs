//! The configuration file: where to listen, which certificate to serve, and the
//! ordered list of policies with their modes, limits and settings.
//!
//! One YAML file, every key optional, camelCase like the Kubernetes objects it sits
//! next to (it usually arrives as a ConfigMap). Without a file, stsguard runs the
//! built-in policies in their default order. Unknown keys are errors, not silently
//! ignored: a misspelt `failurPolicy` must not quietly fall back to the default.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use stsguard_contract::cluster::ResourceKind;

use crate::builtin;
use crate::registry::{self, OciReference};

/// Everything the config file can say.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Address to serve HTTPS on; the `--listen` flag wins over it.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Certificate and key files; the `--tls-cert`/`--tls-key` flags win over them.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Deadline for a whole review, queueing included. Keep it below the
    /// webhook's `timeoutSeconds` so the API server gets an answer, not a time-out.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request body accepted; larger ones are answered with 413.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: ByteSize,
    /// How often the config file, policy modules and certificate are checked
    /// for changes.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// The policies, in evaluation order.
    #[serde(default = "default_policies")]
    pub policies: Vec<PolicyConfig>,
    /// Which policy modules must be signed, and by whom.
    #[serde(default)]
    pub verification: Option<VerificationConfig>,
    /// Whether `policies` is the default chain (the file has no `policies`):
    /// then the built-ins that read the cluster join it when there is one
    /// ([`Config::with_cluster_builtins`]).
    #[serde(skip)]
    pub default_chain: bool,
}

/// Signatures policy modules must carry (cosign's formats: `stsguard sign` or
/// `cosign sign --key` for modules in registries, `cosign sign-blob` for files).
/// Built-in policies, part of the binary, are never asked for one.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerificationConfig {
    /// Trusted public keys (ECDSA P-256, `PUBLIC KEY` PEM): each the PEM text
    /// itself, the path of a PEM file, or a directory whose every file is one
    /// (a mounted ConfigMap); relative paths from this file's directory.
    pub keys: Vec<String>,
    /// Annotations a signature must carry (`cosign sign -a team=platform`).
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Every `oci://` module must be signed: one without a signature that
    /// verifies is not loaded. `false` only reports (log, `/readyz`).
    #[serde(default = "required_by_default")]
    pub required: bool,
    /// Module files must be signed too, by a detached signature beside them
    /// (`FILE.sig`: what `cosign sign-blob --key` prints).
    #[serde(default)]
    pub files: bool,
}

fn required_by_default() -> bool {
    true
}

/// The key files a `verification.keys` path names: the file, or every file of a
/// directory but hidden ones (a mounted ConfigMap or Secret: each key a public
/// key, and the kubelet's `..data` links skipped), so that adding a key to the
/// ConfigMap trusts it without a config change.
fn key_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| format!("could not list {}: {e}", path.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| entry.path())
        .filter(|file| file.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "the directory {} holds no key files",
            path.display()
        ));
    }
    Ok(files)
}

impl VerificationConfig {
    /// The keys read and parsed, with what they must satisfy; an error names
    /// the key that cannot be used.
    pub fn verification(&self) -> Result<crate::registry::Verification, String> {
        use crate::signature::{PublicKey, Verifier};
        if self.keys.is_empty() {
            return Err("verification.keys lists no key: give the public keys (PEM, or files) whose signatures are trusted".into());
        }
        let mut keys = Vec::new();
        for (index, key) in self.keys.iter().enumerate() {
            let named = |e: String| format!("verification.keys[{index}]: {e}");
            if key.contains("-----BEGIN") {
                keys.push(PublicKey::from_pem(key).map_err(|e| named(e.to_string()))?);
                continue;
            }
            for file in key_files(Path::new(key)).map_err(named)? {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| named(format!("could not read {}: {e}", file.display())))?;
                keys.push(
                    PublicKey::from_pem(&text)
                        .map_err(|e| named(format!("{}: {e}", file.display())))?,
                );
            }
        }
        Ok(crate::registry::Verification {
            verifier: Verifier::new(keys, self.annotations.clone()),
            required: self.required,
        })
    }
}

/// Certificate chain and private key, PEM files.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// One entry of the policy chain.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique name: used in `/mutate/{name}`, in logs, metrics and warnings.
    pub name: String,
    /// Where the component comes from.
    pub module: ModuleSource,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Wall-clock limit for one evaluation.
    #[serde(default = "default_policy_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Most linear memory one evaluation may use.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    /// Passed to the policy as JSON; `{}` when absent.
    #[serde(default = "empty_settings")]
    pub settings: serde_json::Value,
    /// Evaluations of this policy that may run at once; beyond that it is not
    /// run and its failurePolicy decides at once. Unset: no limit (see the
    /// docs/design.md, "Isolation", for why that is the default).
    #[serde(default)]
    pub max_concurrent: Option<std::num::NonZeroUsize>,
    /// When to stop running a policy that keeps timing out or trapping.
    #[serde(default)]
    pub circuit: CircuitConfig,
    /// The kinds of cluster objects the policy may read: each kind its
    /// metadata declares must be here, or it is not loaded. Granting is
    /// explicit and per kind: nothing grants Secrets but `{apiVersion: v1,
    /// kind: Secret}` itself.
    #[serde(default)]
    pub reads: Vec<ResourceKind>,
}

/// A policy's circuit breaker: after `failures` timeouts or traps in a row it
/// is not run for `cooldown` (its failurePolicy decides at once), then one
/// evaluation at a time tests it: a success closes the circuit, a failure opens
/// it again.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitConfig {
    /// Consecutive timeouts or traps that open the circuit; 0 never opens it.
    #[serde(default = "default_circuit_failures")]
    pub failures: u32,
    #[serde(default = "default_circuit_cooldown", with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            failures: default_circuit_failures(),
            cooldown: default_circuit_cooldown(),
        }
    }
}

fn default_circuit_failures() -> u32 {
    3
}

fn default_circuit_cooldown() -> Duration {
    Duration::from_secs(30)
}

/// Where a policy's component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModuleSource {
    /// `builtin:<name>`: embedded in the binary.
    Builtin(String),
    /// A path to a `.wasm` component, relative to the config file's folder.
    File(PathBuf),
    /// `oci://HOST[:PORT]/REPO:TAG` and/or `@sha256:DIGEST`: an artifact in a
    /// registry, pulled when the policy set loads (see `registry`).
    Oci(OciReference),
}

/// Whether a policy's verdict takes effect.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    /// Denials deny, mutations are applied.
    #[default]
    Enforce,
    /// Never denies and never mutates: what the policy would have done becomes a
    /// warning, a log line and a metric. For trying a policy on a live cluster.
    Monitor,
}

/// What a policy error or time-out means for the request.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum FailurePolicy {
    /// Deny the request: the safe choice for a policy that guards something.
    #[default]
    Fail,
    /// Skip the policy (with a warning) and go on with the chain.
    Ignore,
}

/// A number of bytes, written as an integer or a Kubernetes quantity with a
/// binary (`Ki`, `Mi`, `Gi`) or decimal (`k`, `M`, `G`) suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Why a configuration could not be used.
/// Each message ends with its cause, which is therefore not also a `source()`:
/// log lines show only the message, and `{:#}` chains would print the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read the config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the config file {path} is not valid: {cause}")]
    Parse {
        path: PathBuf,
        cause: serde_yaml::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads and checks a config file. Relative module paths are resolved
    /// against the file's folder, so a config works wherever it is mounted.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let mut config = Self::parse(&text).map_err(|error| error.at(path))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for policy in &mut config.policies {
            if let ModuleSource::File(file) = &mut policy.module
                && file.is_relative()
            {
                *file = base.join(&*file);
            }
        }
        for key in config.verification.iter_mut().flat_map(|v| &mut v.keys) {
            if !key.contains("-----BEGIN") && Path::new(key.as_str()).is_relative() {
                *key = base.join(&*key).display().to_string();
            }
        }
        Ok(config)
    }

    /// What pulled modules must satisfy, read (key files included) now: keys
    /// rotated in a mounted Secret take effect at the next load.
    pub fn verification(&self) -> Result<Option<crate::registry::Verification>, String> {
        self.verification
            .as_ref()
            .map(VerificationConfig::verification)
            .transpose()
    }

    /// The registry references of the `oci://` modules, each once.
    pub fn oci_references(&self) -> std::collections::BTreeSet<&OciReference> {
        self.policies
            .iter()
            .filter_map(|policy| match &policy.module {
                ModuleSource::Oci(reference) => Some(reference),
                _ => None,
            })
            .collect()
    }

    /// The config in `path`, or the defaults (the built-ins) when there is none.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self, ConfigError> {
        path.map_or_else(|| Ok(Self::default()), Self::load)
    }

    /// A chain of one policy with every default: what `eval --policy` and
    /// `test` run when no config file is given. The policy is named after the
    /// built-in, or after the file (`build/demo.wasm` → `demo`).
    pub fn single(
        module: ModuleSource,
        settings: serde_json::Value,
    ) -> Result<Self, UnplacedError> {
        let name = match &module {
            ModuleSource::Builtin(name) => name.clone(),
            ModuleSource::File(path) => policy_name_for(path),
            // oci://registry/team/probes:v1 → probes
            ModuleSource::Oci(reference) => {
                policy_name_from(reference.repository.rsplit('/').next().unwrap_or_default())
            }
        };
        let text = serde_json::json!({
            "policies": [{"name": name, "module": module.to_string(), "settings": settings}],
        });
        Self::parse(&text.to_string())
    }

    /// Parses and checks config text; errors carry no path yet.
    pub fn parse(text: &str) -> Result<Self, UnplacedError> {
        // An empty file means "all defaults", as no file does.
        let text = if text.trim().is_empty() { "{}" } else { text };
        let mut config: Config = serde_yaml::from_str(text).map_err(UnplacedError::Parse)?;
        config.default_chain = serde_yaml::from_str::<serde_yaml::Value>(text)
            .map_err(UnplacedError::Parse)?
            .get("policies")
            .is_none();
        config.check().map_err(UnplacedError::Invalid)?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        for policy in &self.policies {
            let name = &policy.name;
            check_policy_name(name)?;
            if !names.insert(name.as_str()) {
                return Err(format!(
                    "policy name `{name}` is used twice; names must be unique"
                ));
            }
            if policy.timeout.is_zero() {
                return Err(format!(
                    "policy `{name}`: timeout must be greater than zero"
                ));
            }
            if policy.circuit.failures > 0 && policy.circuit.cooldown.is_zero() {
                return Err(format!(
                    "policy `{name}`: circuit.cooldown must be greater than zero (or set \
                     circuit.failures: 0 to never open the circuit)"
                ));
            }
            if policy.memory_limit.0 < 1 << 20 {
                return Err(format!(
                    "policy `{name}`: memoryLimit {} is too small to run a policy; use at least 1Mi",
                    policy.memory_limit
                ));
            }
            if !policy.settings.is_object() {
                return Err(format!(
                    "policy `{name}`: settings must be a mapping (got {})",
                    policy.settings
                ));
            }
            let mut granted = HashSet::new();
            for kind in &policy.reads {
                kind.validate()
                    .map_err(|e| format!("policy `{name}`: reads: {e}"))?;
                if !granted.insert(kind) {
                    return Err(format!("policy `{name}`: reads grants {kind} twice"));
                }
            }
            if let ModuleSource::Builtin(builtin) = &policy.module
                && builtin::module(builtin).is_none()
            {
                return Err(format!(
                    "policy `{name}`: there is no built-in policy `{builtin}`; built-ins are: {}",
                    builtin::names().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if self.request_timeout.is_zero() {
            return Err("requestTimeout must be greater than zero".into());
        }
        if self.reload_interval.is_zero() {
            return Err("reloadInterval must be greater than zero".into());
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::parse("").expect("the default configuration is valid")
    }
}

/// A config error before it is tied to a file (for text that came from elsewhere).
#[derive(Debug, thiserror::Error)]
pub enum UnplacedError {
    #[error("{0}")]
    Parse(serde_yaml::Error),
    #[error("{0}")]
    Invalid(String),
}

impl UnplacedError {
    fn at(self, path: &Path) -> ConfigError {
        let path = path.to_path_buf();
        match self {
            Self::Parse(cause) => ConfigError::Parse { path, cause },
            Self::Invalid(message) => ConfigError::Invalid { path, message },
        }
    }
}

/// Deadline for a whole review unless the config sets `requestTimeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// Largest review body unless the config sets `maxRequestBytes`. The API server
/// takes request bodies of up to 3 MiB, and an UPDATE review carries the object
/// and the old object (each as JSON, which can be larger than the etcd limit of
/// 1.5 MiB that applies to the stored protobuf) plus the request around them: a
/// 413 would fail the webhook call, and with `failurePolicy: Fail` block every
/// update of that object.
pub const DEFAULT_MAX_REQUEST_BYTES: ByteSize = ByteSize(8 << 20);

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

fn default_max_request_bytes() -> ByteSize {
    DEFAULT_MAX_REQUEST_BYTES
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(2)
}

/// The rule for a policy's name: it appears in URLs (`/mutate/{name}`),
/// metrics and warnings.
pub fn check_policy_name(name: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "policy name `{name}` must be 1-63 characters of a-z, 0-9 and `-` \
             (it appears in URLs, metrics and warnings)"
        ))
    }
}

/// A policy name (a-z, 0-9, `-`, at most 63) made from a module file's name.
fn policy_name_for(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy())
        .unwrap_or_default();
    policy_name_from(&stem)
}

/// A policy name made from any text: lower-cased, other characters as `-`.
fn policy_name_from(text: &str) -> String {
    let name: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() {
        "policy".into()
    } else {
        name.to_string()
    }
}

fn default_policy_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_memory_limit() -> ByteSize {
    ByteSize(64 << 20)
}

fn empty_settings() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl Config {
    /// The default chain when there is a cluster to read: every built-in, each
    /// granted exactly the kinds it reads. Changes nothing when the file names
    /// its own policies.
    pub fn with_cluster_builtins(mut self) -> Self {
        if self.default_chain {
            self.policies = builtin_policies(builtin::names());
        }
        self
    }
}

/// The built-in policies that read nothing but the request, in their default
/// order, enforcing, failing closed: the default chain without a cluster.
fn default_policies() -> Vec<PolicyConfig> {
    builtin_policies(builtin::names().filter(|name| builtin::reads(name).is_empty()))
}

/// Built-ins with default settings, each granted what it reads. Those that
/// read the cluster only warn by default, so their failurePolicy is `ignore`: a
/// kind that cannot be read (not synced, no RBAC) never blocks a write.
fn builtin_policies<'a>(names: impl Iterator<Item = &'a str>) -> Vec<PolicyConfig> {
    names
        .map(|name| PolicyConfig {
            name: name.to_string(),
            module: ModuleSource::Builtin(name.to_string()),
            mode: Mode::default(),
            failure_policy: if builtin::reads(name).is_empty() {
                FailurePolicy::default()
            } else {
                FailurePolicy::Ignore
            },
            timeout: default_policy_timeout(),
            memory_limit: default_memory_limit(),
            settings: empty_settings(),
            max_concurrent: None,
            circuit: CircuitConfig::default(),
            reads: builtin::reads(name),
        })
        .collect()
}

impl FromStr for ModuleSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(name) = text.strip_prefix("builtin:") {
            return Ok(Self::Builtin(name.to_string()));
        }
        if text.starts_with(registry::reference::SCHEME) {
            return text
                .parse()
                .map(Self::Oci)
                .map_err(|error| format!("module {error}"));
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            return Err(format!(
                "module `{text}`: plain URLs are not supported; push the component to an OCI \
                 registry (`stsguard push FILE oci://HOST/REPO:TAG`) and name it with oci://, \
                 or give its file path"
            ));
        }
        if text.is_empty() {
            return Err(
                "module must be `builtin:<name>`, `oci://HOST/REPO:TAG` or a path to a .wasm \
                 component"
                    .into(),
            );
        }
        Ok(Self::File(PathBuf::from(text)))
    }
}

impl<'de> Deserialize<'de> for ModuleSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ModuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Builtin(name) => write!(f, "builtin:{name}"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Oci(reference) => write!(f, "{reference}"),
        }
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const SUFFIXES: &[(&str, u64)] = &[
            ("Ki", 1 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
            ("k", 1_000),
            ("M", 1_000_000),
            ("G", 1_000_000_000),
        ];
        let text = text.trim();
        let (digits, unit) = SUFFIXES
            .iter()
            .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|digits| (digits, *unit)))
            .unwrap_or((text, 1));
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .map(ByteSize)
            .ok_or_else(|| {
                format!("`{text}` is not a size; write bytes (1048576) or a quantity like 64Mi")
            })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
            write!(f, "{}Mi", n >> 20)
        } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
            write!(f, "{}Ki", n >> 10)
        } else {
            write!(f, "{n}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_builtins_in_default_order() {
        let config = Config::default();
        let names: Vec<_> = config.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["probes", "parallel", "volume-claims"],
            "without a cluster"
        );
        assert!(config.policies.iter().all(|p| p.mode == Mode::Enforce));
        assert!(config.policies.iter().all(|p| p.reads.is_empty()));
        assert_eq!(config.request_timeout, Duration::from_secs(8));

        let config = config.with_cluster_builtins();
        let names: Vec<_> = config.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            builtin::names().collect::<Vec<_>>(),
            "with a cluster: all"
        );
        for policy in &config.policies {
            assert_eq!(
                policy.reads,
                builtin::reads(&policy.name),
                "{}",
                policy.name
            );
            let ignore = !policy.reads.is_empty();
            assert_eq!(
                policy.failure_policy == FailurePolicy::Ignore,
                ignore,
                "{}",
                policy.name
            );
        }
        let grants: Vec<String> = config
            .policies
            .iter()
            .flat_map(|p| p.reads.iter().map(|k| format!("{}: {k}", p.name)))
            .collect();
        assert_eq!(
            grants,
            [
                "headless-service: v1 Service",
                "storage-class: storage.k8s.io/v1 StorageClass",
                "disruption-budget: policy/v1 PodDisruptionBudget",
            ],
            "each is granted exactly what it reads"
        );
    }

    #[test]
    fn a_config_that_names_its_policies_keeps_them_with_a_cluster() {
        let config = Config::parse("policies: [{name: a, module: 'builtin:probes'}]")
            .unwrap()
            .with_cluster_builtins();
        assert_eq!(config.policies.len(), 1);
        let empty = Config::parse("requestTimeout: 5s").unwrap();
        assert!(empty.default_chain, "no `policies`: the default chain");
        assert_eq!(
            empty.with_cluster_builtins().policies.len(),
            builtin::names().count()
        );
    }

    #[test]
    fn grants_are_one_kind_each_never_a_wildcard() {
        let config = Config::parse(
            "policies: [{name: a, module: 'builtin:probes', reads: [{apiVersion: v1, kind: Service}]}]",
        )
        .unwrap();
        assert_eq!(
            config.policies[0].reads,
            [ResourceKind::new("v1", "Service")]
        );
        for (yaml, says) in [
            ("reads: [{apiVersion: v1, kind: '*'}]", "no wildcards"),
            ("reads: [{apiVersion: v1}]", "missing field `kind`"),
            (
                "reads: [{apiVersion: v1, kind: Service, resource: services}]",
                "unknown field",
            ),
            (
                "reads: [{apiVersion: v1, kind: Service}, {apiVersion: v1, kind: Service}]",
                "grants v1 Service twice",
            ),
        ] {
            let text = format!("policies: [{{name: a, module: 'builtin:probes', {yaml}}}]");
            let error = Config::parse(&text).unwrap_err().to_string();
            assert!(error.contains(says), "{yaml}: {error}");
        }
    }

    #[test]
    fn circuit_and_bulkhead_parse_with_defaults_and_refuse_nonsense() {
        let config = Config::parse(
            "policies:
  - {name: a, module: builtin:probes}
  - {name: b, module: builtin:parallel, maxConcurrent: 2, circuit: {failures: 5, cooldown: 1m}}",
        )
        .unwrap();
        assert_eq!(config.policies[0].max_concurrent, None);
        assert_eq!(config.policies[0].circuit, CircuitConfig::default());
        assert_eq!(config.policies[1].max_concurrent.map(|n| n.get()), Some(2));
        assert_eq!(config.policies[1].circuit.failures, 5);
        assert_eq!(config.policies[1].circuit.cooldown, Duration::from_secs(60));
        for (yaml, expected) in [
            (
                "policies: [{name: a, module: builtin:probes, maxConcurrent: 0}]",
                "maxConcurrent",
            ),
            (
                "policies: [{name: a, module: builtin:probes, circuit: {failures: 3, cooldown: 0s}}]",
                "circuit.cooldown must be greater than zero",
            ),
            (
                "policies: [{name: a, module: builtin:probes, circuit: {failurs: 3}}]",
                "unknown field `failurs`",
            ),
        ] {
            let error = Config::parse(yaml).unwrap_err().to_string();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
        Config::parse(
            "policies: [{name: a, module: builtin:probes, circuit: {failures: 0, cooldown: 0s}}]",
        )
        .expect("a circuit that never opens needs no cooldown");
    }

    #[test]
    fn full_policy_entry_parses() {
        let config = Config::parse(
            r#"
listen: 0.0.0.0:9443
tls: { certFile: /tls/tls.crt, keyFile: /tls/tls.key }
requestTimeout: 5s
maxRequestBytes: 1Mi
policies:
  - name: my-rule
    module: rules/my-rule.wasm
    mode: monitor
    failurePolicy: ignore
    timeout: 250ms
    memoryLimit: 32Mi
    settings: { level: 3 }
"#,
        )
        .unwrap();
        let policy = &config.policies[0];
        assert_eq!(
            policy.module,
            ModuleSource::File("rules/my-rule.wasm".into())
        );
        assert_eq!(policy.mode, Mode::Monitor);
        assert_eq!(policy.failure_policy, FailurePolicy::Ignore);
        assert_eq!(policy.timeout, Duration::from_millis(250));
        assert_eq!(policy.memory_limit, ByteSize(32 << 20));
        assert_eq!(policy.settings["level"], 3);
        assert_eq!(config.max_request_bytes, ByteSize(1 << 20));
        assert_eq!(config.listen, Some("0.0.0.0:9443".parse().unwrap()));
    }

    #[test]
    fn misspelt_keys_are_errors_not_defaults() {
        let error =
            Config::parse("policies: [{name: a, module: 'builtin:probes', failurPolicy: ignore}]")
                .unwrap_err()
                .to_string();
        assert!(error.contains("failurPolicy"), "{error}");
    }

    #[test]
    fn bad_entries_are_named() {
        let cases = [
            (
                "policies: [{name: a, module: 'builtin:nope'}]",
                "no built-in policy `nope`",
            ),
            (
                "policies: [{name: A_b, module: 'builtin:probes'}]",
                "name `A_b`",
            ),
            (
                "policies: [{name: a, module: 'builtin:probes'}, {name: a, module: 'builtin:parallel'}]",
                "used twice",
            ),
            (
                "policies: [{name: a, module: 'builtin:probes', mode: strict}]",
                "unknown variant `strict`",
            ),
            (
                "policies: [{name: a, module: 'builtin:probes', timeout: 0s}]",
                "greater than zero",
            ),
            (
                "policies: [{name: a, module: 'builtin:probes', memoryLimit: 12}]",
                "too small",
            ),
            (
                "policies: [{name: a, module: 'builtin:probes', memoryLimit: lots}]",
                "not a size",
            ),
            (
                "policies: [{name: a, module: 'builtin:probes', settings: [1]}]",
                "must be a mapping",
            ),
            (
                "policies: [{name: a, module: 'https://x/p.wasm'}]",
                "plain URLs are not supported; push the component to an OCI registry",
            ),
            (
                "policies: [{name: a, module: 'oci://registry.example.com/p'}]",
                "module `oci://registry.example.com/p` is not an OCI reference: it has neither a tag nor a digest",
            ),
        ];
        for (text, expected) in cases {
            let error = Config::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn a_single_policy_is_named_after_its_file() {
        let config = Config::single(
            "build/My_Policy.v2.wasm".parse().unwrap(),
            serde_json::json!({"maxReplicas": 3}),
        )
        .unwrap();
        assert_eq!(config.policies.len(), 1);
        assert_eq!(config.policies[0].name, "my-policy-v2");
        assert_eq!(config.policies[0].settings["maxReplicas"], 3);
        assert_eq!(config.policies[0].timeout, default_policy_timeout());
        let builtin = Config::single("builtin:probes".parse().unwrap(), empty_settings()).unwrap();
        assert_eq!(builtin.policies[0].name, "probes");
        let error = Config::single("builtin:nope".parse().unwrap(), empty_settings()).unwrap_err();
        assert!(
            error.to_string().contains("no built-in policy `nope`"),
            "{error}"
        );
        assert!(Config::single("x.wasm".parse().unwrap(), serde_json::json!([1])).is_err());
        let error = "oci://127.0.0.1:5000/team/Max.Replicas-rule:v1"
            .parse::<ModuleSource>()
            .unwrap_err();
        assert!(error.contains("not a repository name"), "{error}");
        let pulled = Config::single(
            "oci://127.0.0.1:5000/team/max.replicas:v1".parse().unwrap(),
            empty_settings(),
        )
        .unwrap();
        assert_eq!(pulled.policies[0].name, "max-replicas");
    }

    #[test]
    fn relative_modules_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "policies: [{name: a, module: rules/a.wasm}]").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.policies[0].module,
            ModuleSource::File(dir.path().join("rules/a.wasm"))
        );
    }

    #[test]
    fn load_errors_name_the_file() {
        let error = Config::load(Path::new("/nonexistent/stsguard.yaml")).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/stsguard.yaml"),
            "{error}"
        );
    }

    #[test]
    fn verification_keys_are_pem_files_or_directories_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let key = |name: &str| {
            let (key, _) = crate::signature::SigningKey::generate(b"").unwrap();
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, key.public().to_pem()).unwrap();
            key.public().fingerprint().to_string()
        };
        let team = key("team.pub");
        let (a, b) = (key("trusted/a.pub"), key("trusted/b.pub"));
        // What the kubelet leaves in a ConfigMap mount beside the keys.
        std::fs::create_dir(dir.path().join("trusted/..2026_12_08")).unwrap();
        std::fs::write(dir.path().join("trusted/.hidden"), "not a key").unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "verification: {keys: [team.pub, trusted]}").unwrap();
        let config = Config::load(&path).unwrap();
        let section = config.verification.as_ref().unwrap();
        assert!(section.required, "required unless said otherwise");
        assert!(!section.files);
        let verification = config.verification().unwrap().unwrap();
        let mut expected = [team, a, b];
        expected[1..].sort();
        assert_eq!(verification.verifier.keys(), expected.join(", "));

        std::fs::write(dir.path().join("trusted/c.pub"), "not a key").unwrap();
        let error = Config::load(&path).unwrap().verification().unwrap_err();
        assert!(error.starts_with("verification.keys[1]: "), "{error}");
        assert!(error.contains("c.pub"), "{error}");

        for (yaml, expected) in [
            ("verification: {keys: []}", "lists no key"),
            ("verification: {keys: [missing.pub]}", "could not read"),
            (
                "verification: {keys: ['-----BEGIN PUBLIC KEY-----']}",
                "verification.keys[0]",
            ),
        ] {
            std::fs::write(&path, yaml).unwrap();
            let error = Config::load(&path).unwrap().verification().unwrap_err();
            assert!(error.contains(expected), "{yaml}: {error}");
        }
        std::fs::write(&path, "verification: {keys: [a], requird: false}").unwrap();
        let error = Config::load(&path).unwrap_err().to_string();
        assert!(error.contains("requird"), "{error}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!("64Mi".parse::<ByteSize>().unwrap(), ByteSize(64 << 20));
        assert_eq!("2k".parse::<ByteSize>().unwrap(), ByteSize(2000));
        assert_eq!("512".parse::<ByteSize>().unwrap(), ByteSize(512));
        assert!("99999999999999999999Gi".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64Mi");
    }
}
