//! Loading a policy set: read each module, compile it once, check each policy's
//! settings with the policy itself. Slow on a compilation-cache miss, so it runs
//! off the request path (at start-up and on reload).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use stsguard_contract::GroupVersionKind;

use super::evaluate::Selection;
use super::guard::{CircuitState, Guard};
use crate::builtin;
use crate::config::{Config, FailurePolicy, Mode, ModuleSource, PolicyConfig};
use crate::engine::{
    self, CallContext, ClusterAccess, ClusterReader, Engine, EvalError, Limits, Metadata, Module,
};
use crate::registry::{OciReference, Pulled};

/// One configured, loaded policy.
#[derive(Debug)]
pub struct Policy {
    pub config: PolicyConfig,
    pub(super) name: Arc<str>,
    pub(super) module: Arc<Module>,
    /// sha256 of the module's bytes, as read (the file or the built-in).
    pub(super) digest: [u8; 32],
    /// For a module from a registry: its reference pinned to the manifest
    /// digest the set runs.
    pub(super) pulled: Option<OciReference>,
    pub(super) settings: String,
    pub(super) limits: Limits,
    pub(super) guard: Guard,
    /// What it may read of the cluster; `None` when it reads nothing.
    pub(super) cluster: Option<ClusterAccess>,
    /// Who signed its module, when the configuration asks for signatures and
    /// one verified.
    pub(super) signer: Option<crate::signature::Signer>,
}

/// A policy's module as reports name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleIdentity {
    /// The module's sha256 (hex).
    pub sha256: String,
    /// The fingerprint of the key whose signature verified, when one was asked for.
    pub signer: Option<String>,
}

impl Policy {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn metadata(&self) -> &Metadata {
        self.module.metadata()
    }

    /// The compiled component behind this policy.
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// The sha256 of the module's bytes, in hex: which module ran, whatever its
    /// path or name (what `stsguard inspect` prints).
    pub fn digest(&self) -> String {
        engine::hex(&self.digest)
    }

    /// Where the module came from, as it ran: the built-in or file as
    /// configured, a registry artifact pinned to its manifest digest
    /// (`oci://HOST/REPO:TAG@sha256:...`).
    pub fn source(&self) -> String {
        match &self.pulled {
            Some(reference) => reference.to_string(),
            None => self.config.module.to_string(),
        }
    }

    /// Who signed its module, when verified.
    pub fn signer(&self) -> Option<&crate::signature::Signer> {
        self.signer.as_ref()
    }

    /// The registry reference the module was pulled from, pinned to its
    /// manifest digest; `None` for a built-in or file.
    pub fn pulled(&self) -> Option<&OciReference> {
        self.pulled.as_ref()
    }

    /// Its circuit breaker's state now.
    pub fn circuit_state(&self) -> CircuitState {
        self.guard.state(Instant::now())
    }

    /// Whether the policy wants to see this kind of object.
    pub(super) fn targets(&self, kind: &GroupVersionKind) -> bool {
        self.metadata()
            .targets
            .iter()
            .any(|target| target.matches(kind))
    }
}

/// The loaded chain, in evaluation order.
#[derive(Debug, Default)]
pub struct PolicySet {
    pub(super) policies: Vec<Policy>,
}

/// Why a policy set could not be loaded; names the policy and says what to do.
/// Each message ends with its cause, which is therefore not also a `source()`
/// (see docs/design.md, "Errors").
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "policy `{policy}`: its module {reference} was not pulled before the policy set loaded"
    )]
    NotPulled { policy: String, reference: String },
    #[error("policy `{policy}`: could not read its module {path}: {cause}")]
    ReadModule {
        policy: String,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("policy `{policy}` ({module}): {cause}")]
    Module {
        policy: String,
        module: String,
        cause: engine::LoadError,
    },
    #[error("policy `{policy}` ({module}): its settings are invalid: {message}")]
    Settings {
        policy: String,
        module: String,
        message: String,
    },
    #[error(
        "policy `{policy}`: memoryLimit {limit} is above the largest allowed, {}Mi",
        engine::MAX_MEMORY_LIMIT >> 20
    )]
    MemoryLimit { policy: String, limit: String },
    #[error(
        "policy `{policy}` ({module}) reads {missing}, which the configuration does not grant it; \
         if it should, add to the policy's entry in the config: `reads: [{all}]`"
    )]
    NotGranted {
        policy: String,
        module: String,
        /// The declared kinds not granted, as a list.
        missing: String,
        /// Every kind it declares, as YAML flow mappings.
        all: String,
    },
    #[error("policy `{policy}` ({path}): refused: {message}")]
    Unsigned {
        policy: String,
        path: PathBuf,
        message: String,
    },
    #[error("the verification section cannot be used: {0}")]
    Verification(String),
    #[error(
        "policy `{policy}` ({module}) reads {kinds}, and there is no cluster to read from: give \
         stsguard a kubeconfig (KUBECONFIG) or run it in a pod with a service account \
         (--cluster-access auto), or give the objects offline (--context, `context:`)"
    )]
    NoCluster {
        policy: String,
        module: String,
        kinds: String,
    },
}

impl PolicySet {
    /// Loads every policy of `config`, which names no `oci://` module and no
    /// policy that reads the cluster: reads and compiles each distinct module
    /// once, checks each policy's settings with the policy itself.
    pub fn load(engine: &Engine, config: &Config) -> Result<Self, LoadError> {
        Self::load_pulled(engine, config, &Pulled::default(), None)
    }

    /// Loads `config` whose `oci://` modules are in `pulled` (see
    /// [`crate::registry::Registry::pull_all`]); policies that read the cluster
    /// read it through `cluster`, each within the kinds it is granted.
    pub fn load_pulled(
        engine: &Engine,
        config: &Config,
        pulled: &Pulled,
        cluster: Option<&Arc<dyn ClusterReader>>,
    ) -> Result<Self, LoadError> {
        let mut modules: HashMap<[u8; 32], Arc<Module>> = HashMap::new();
        // Module files are checked here; registry modules when they were pulled.
        let files = match &config.verification {
            Some(verification) if verification.files => Some(
                verification
                    .verification()
                    .map_err(LoadError::Verification)?
                    .verifier,
            ),
            _ => None,
        };
        let policies = config
            .policies
            .iter()
            .map(|policy| {
                Policy::load(
                    engine,
                    policy,
                    pulled,
                    cluster,
                    files.as_ref(),
                    &mut modules,
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { policies })
    }

    /// Every kind some policy of the set is granted and reads, once: what the
    /// server must watch.
    pub fn kinds_read(&self) -> Vec<stsguard_contract::cluster::ResourceKind> {
        let mut kinds: Vec<_> = self
            .policies
            .iter()
            .flat_map(|policy| policy.metadata().reads.iter().cloned())
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// What each policy runs, by policy name: for reports that say which
    /// module (and whose) judged an object.
    pub fn modules(&self) -> HashMap<String, ModuleIdentity> {
        self.policies
            .iter()
            .map(|policy| {
                let identity = ModuleIdentity {
                    sha256: policy.digest(),
                    signer: policy.signer().map(|signer| signer.key.clone()),
                };
                (policy.name().to_string(), identity)
            })
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name() == name)
    }

    /// Whether a failure of stsguard itself on a review must deny it: when a
    /// selected policy enforces with failurePolicy `fail`, as that policy's own
    /// failure would. Otherwise (every policy in monitor mode or `ignore`) such a
    /// review is allowed, so a release that only observes never blocks a write.
    pub fn fails_closed(&self, only: Option<&str>) -> bool {
        self.selected(only.into()).any(|policy| {
            policy.config.mode == Mode::Enforce
                && policy.config.failure_policy == FailurePolicy::Fail
        })
    }

    /// Whether every selected policy is trusted now (see [`super::guard`]): then
    /// the review may run on the async worker that read it, with no hand-off to
    /// an evaluation thread.
    pub fn trusted(&self, only: Option<&str>, now: Instant) -> bool {
        self.selected(only.into())
            .all(|policy| policy.guard.trusted(now))
    }

    /// The policies a review with this selection runs, in order.
    pub(super) fn selected<'a>(
        &'a self,
        selection: Selection<'a>,
    ) -> impl Iterator<Item = &'a Policy> {
        self.policies.iter().filter(move |policy| match selection {
            Selection::All => true,
            Selection::Only(name) => policy.name() == name,
        })
    }

    /// `kind` as a metric label: the kind when a policy of the set names it (the
    /// configuration bounds those), `other` for anything else a client sends.
    pub fn kind_label(&self, kind: &GroupVersionKind) -> String {
        let named = self.policies.iter().any(|policy| {
            policy.metadata().targets.iter().any(|target| {
                target.group == kind.group
                    && target.kind != stsguard_contract::kind::ANY
                    && target.kind == kind.kind
            })
        });
        if named {
            kind.kind.clone()
        } else {
            "other".into()
        }
    }
}

impl Policy {
    /// Loads one policy, reusing a module already compiled for another one.
    fn load(
        engine: &Engine,
        config: &PolicyConfig,
        pulled: &Pulled,
        cluster: Option<&Arc<dyn ClusterReader>>,
        files: Option<&crate::signature::Verifier>,
        modules: &mut HashMap<[u8; 32], Arc<Module>>,
    ) -> Result<Self, LoadError> {
        let name = config.name.clone();
        let module_name = config.module.to_string();
        if config.memory_limit.0 > engine::MAX_MEMORY_LIMIT {
            return Err(LoadError::MemoryLimit {
                policy: name,
                limit: config.memory_limit.to_string(),
            });
        }
        let mut pinned = None;
        let mut signer = None;
        let bytes: Cow<'_, [u8]> = match &config.module {
            ModuleSource::Builtin(builtin) => builtin::module(builtin)
                .expect("built-in names are checked when the config is parsed")
                .into(),
            ModuleSource::File(path) => std::fs::read(path)
                .map_err(|cause| LoadError::ReadModule {
                    policy: name.clone(),
                    path: path.clone(),
                    cause,
                })?
                .into(),
            ModuleSource::Oci(reference) => {
                let module = pulled.get(reference).ok_or_else(|| LoadError::NotPulled {
                    policy: name.clone(),
                    reference: reference.to_string(),
                })?;
                pinned = Some(module.resolved.clone());
                signer = module.signer.clone();
                Cow::Borrowed(&module.bytes[..])
            }
        };
        if let (ModuleSource::File(path), Some(verifier)) = (&config.module, files) {
            signer = Some(verify_file(&name, path, &bytes, verifier)?);
        }
        let module_name = pinned.as_ref().map_or(module_name, ToString::to_string);
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        let module = match modules.get(&digest) {
            Some(module) => module.clone(),
            None => {
                let started = Instant::now();
                let module = Arc::new(engine.load(&bytes).map_err(|cause| LoadError::Module {
                    policy: name.clone(),
                    module: module_name.clone(),
                    cause,
                })?);
                tracing::info!(
                    policy = %name,
                    module = %module_name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "policy module loaded"
                );
                modules.insert(digest, module.clone());
                module
            }
        };
        let cluster = grant(config, &module, &module_name, cluster)?;
        let settings = config.settings.to_string();
        let limits = Limits {
            timeout: config.timeout,
            memory_bytes: config.memory_limit.0,
        };
        let name: Arc<str> = name.into();
        let context = CallContext {
            policy: name.clone(),
            uid: "validate-settings".into(),
            cluster: None,
        };
        module
            .validate_settings(&settings, &limits, &context)
            .map_err(|error| LoadError::Settings {
                policy: name.to_string(),
                module: module_name,
                message: match error {
                    EvalError::Policy(message) => message,
                    other => format!("the policy's settings check {other}"),
                },
            })?;
        Ok(Self {
            config: config.clone(),
            name,
            module,
            digest,
            pulled: pinned,
            settings,
            limits,
            guard: Guard::new(config.max_concurrent.map(|n| n.get()), config.circuit),
            cluster,
            signer,
        })
    }
}

/// A module file's detached signature (`FILE.sig`, as `cosign sign-blob --key`
/// prints it), checked against its bytes.
fn verify_file(
    policy: &str,
    path: &std::path::Path,
    bytes: &[u8],
    verifier: &crate::signature::Verifier,
) -> Result<crate::signature::Signer, LoadError> {
    let refused = |message: String| LoadError::Unsigned {
        policy: policy.to_string(),
        path: path.to_path_buf(),
        message,
    };
    let signature_path = crate::signature::file_signature_path(path);
    let signature = std::fs::read_to_string(&signature_path).map_err(|e| {
        refused(format!(
            "module files must be signed (verification.files), and its signature {} could not \
             be read ({e}); sign it with `stsguard sign {} --key KEY`",
            signature_path.display(),
            path.display()
        ))
    })?;
    verifier.verify_blob(bytes, &signature).map_err(|why| {
        refused(format!(
            "its signature {} does not verify: {why} (sha256 {})",
            signature_path.display(),
            crate::registry::artifact::sha256(bytes)
        ))
    })
}

/// What a policy may read: every kind its metadata declares must be granted in
/// its configuration, and a server without a cluster cannot serve a policy that
/// reads one. Grants the policy does not declare give it nothing and are logged.
fn grant(
    config: &PolicyConfig,
    module: &Module,
    module_name: &str,
    cluster: Option<&Arc<dyn ClusterReader>>,
) -> Result<Option<ClusterAccess>, LoadError> {
    let declared = &module.metadata().reads;
    let missing: Vec<String> = declared
        .iter()
        .filter(|kind| !config.reads.contains(kind))
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(LoadError::NotGranted {
            policy: config.name.clone(),
            module: module_name.to_string(),
            missing: missing.join(", "),
            all: declared
                .iter()
                .map(|k| format!("{{apiVersion: {}, kind: {}}}", k.api_version, k.kind))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    for kind in config.reads.iter().filter(|kind| !declared.contains(kind)) {
        tracing::warn!(
            policy = %config.name,
            kind = %kind,
            "the policy is granted a kind its metadata does not declare; it cannot read it, and \
             the grant can be removed"
        );
    }
    if declared.is_empty() {
        return Ok(None);
    }
    let reader = cluster.ok_or_else(|| LoadError::NoCluster {
        policy: config.name.clone(),
        module: module_name.to_string(),
        kinds: declared
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    Ok(Some(ClusterAccess {
        reader: reader.clone(),
        declared: declared.clone().into(),
    }))
}
