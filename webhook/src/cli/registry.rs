//! Registries on the command line: the options every command that loads
//! policies shares (credentials, CA, insecure hosts, timeout, size limit), and
//! `stsguard push` and `stsguard pull`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::CacheArgs;
use crate::chain::PolicySet;
use crate::config::{ByteSize, Config};
use crate::engine::anatomy::Anatomy;
use crate::engine::{ClusterReader, Engine};
use crate::registry::credentials::Credentials;
use crate::registry::{
    DEFAULT_MAX_MODULE_BYTES, OciReference, Pulled, PulledModule, Registry, RegistryOptions,
};

/// How `oci://` modules are pulled and pushed.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// Registry credentials: a Docker config.json (the format of a
    /// `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`)
    /// [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json when it
    /// exists; anonymous otherwise].
    #[arg(long, env = "STSGUARD_REGISTRY_AUTH", value_name = "FILE")]
    registry_auth: Option<PathBuf>,
    /// PEM certificates to trust for registries, beside the system roots (a
    /// registry whose certificate a private CA signed).
    #[arg(long, env = "STSGUARD_REGISTRY_CA", value_name = "FILE")]
    registry_ca: Option<PathBuf>,
    /// A registry (HOST[:PORT]) to reach over plain HTTP; repeat, or separate
    /// with commas. Every other registry is reached over HTTPS only.
    #[arg(
        long = "insecure-registry",
        env = "STSGUARD_INSECURE_REGISTRIES",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// How long one pull or push may take, connection included; past it, a
    /// pull is served from the cache if it can be, or fails.
    #[arg(long, env = "STSGUARD_REGISTRY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    registry_timeout: Duration,
    /// The largest policy component pulled; a larger one is refused before
    /// it is downloaded.
    #[arg(long, env = "STSGUARD_MAX_MODULE_SIZE", default_value_t = ByteSize(DEFAULT_MAX_MODULE_BYTES))]
    max_module_size: ByteSize,
}

impl RegistryArgs {
    /// The options, artifacts cached beside the compiled policies.
    pub fn options(&self, cache: &CacheArgs) -> anyhow::Result<RegistryOptions> {
        let credentials = match &self.registry_auth {
            Some(path) => Credentials::load(path),
            None => Credentials::load_default(),
        }
        .map_err(anyhow::Error::msg)?;
        Ok(RegistryOptions {
            credentials,
            ca_bundle: self.registry_ca.clone(),
            insecure: self.insecure_registries.clone(),
            timeout: self.registry_timeout,
            max_module_bytes: self.max_module_size.0,
            cache_dir: cache.dir(),
        })
    }

    pub fn registry(&self, cache: &CacheArgs) -> anyhow::Result<Registry> {
        Registry::new(self.options(cache)?).map_err(anyhow::Error::msg)
    }
}

/// Pulls `config`'s `oci://` modules, then loads its policy set, its cluster
/// reads answered by `cluster`: what the commands that run policies outside
/// the server (eval, test, audit, compile) share.
pub fn load_policies(
    engine: &Engine,
    registry: &Registry,
    config: &Config,
    cluster: &Arc<dyn ClusterReader>,
) -> anyhow::Result<PolicySet> {
    let pulled = pull_blocking(registry, config)?;
    Ok(PolicySet::load_pulled(
        engine,
        config,
        &pulled,
        Some(cluster),
    )?)
}

/// [`Registry::pull_all`] of a config's modules, from synchronous code; no runtime is started for a
/// config without `oci://` modules.
pub fn pull_blocking(registry: &Registry, config: &Config) -> anyhow::Result<Pulled> {
    if config.oci_references().is_empty() {
        return Ok(Pulled::default());
    }
    let verification = config.verification().map_err(anyhow::Error::msg)?;
    block_on(registry.pull_all(config.oci_references(), verification.as_ref()))
        .map_err(|error| anyhow::anyhow!("could not pull {error}"))
}

/// Pulls one reference from synchronous code.
pub fn pull_one(registry: &Registry, reference: &OciReference) -> anyhow::Result<PulledModule> {
    block_on(registry.pull(reference)).map_err(|error| anyhow::anyhow!("could not pull {error}"))
}

pub(super) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts")
        .block_on(future)
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The policy component to push.
    file: PathBuf,
    /// Where to: oci://HOST[:PORT]/REPOSITORY:TAG.
    reference: OciReference,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Pushes a policy and prints the reference pinned to its digest (for the config).
pub fn push(args: PushArgs) -> anyhow::Result<()> {
    let PushArgs {
        file,
        reference,
        registry,
        cache,
    } = args;
    let component =
        std::fs::read(&file).with_context(|| format!("could not read {}", file.display()))?;
    let anatomy = Anatomy::read(&component)
        .and_then(|anatomy| anatomy.expect_policy().map(|()| anatomy))
        .map_err(|error| {
            anyhow::anyhow!(
                "{} is not a policy this stsguard serves, so it is not pushed: {error}",
                file.display()
            )
        })?;
    let registry = registry.registry(&cache)?;
    let digest = block_on(registry.push(&component, &anatomy, &reference))?;
    eprintln!(
        "pushed {} ({} bytes) to {reference}",
        file.display(),
        component.len()
    );
    println!("{}", reference.pinned(&digest));
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// What to pull: oci://HOST[:PORT]/REPOSITORY:TAG or ...@sha256:DIGEST.
    reference: OciReference,
    /// Where to write the component.
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Pulls a policy's component into a file; prints the pinned reference.
pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    let PullArgs {
        reference,
        output,
        registry,
        cache,
    } = args;
    let registry = registry.registry(&cache)?;
    let pulled = block_on(registry.pull(&reference))?;
    std::fs::write(&output, &pulled.bytes)
        .with_context(|| format!("could not write {}", output.display()))?;
    eprintln!(
        "pulled {} ({} bytes) into {}",
        pulled.resolved,
        pulled.bytes.len(),
        output.display()
    );
    println!("{}", pulled.resolved);
    Ok(())
}
