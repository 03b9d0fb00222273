//! `stsguard compile`: fills a compilation cache ahead of time.
//!
//! A container image built with `stsguard compile --cache-dir /opt/stsguard/compiled`
//! carries the built-ins compiled; `serve --cache-seed /opt/stsguard/compiled`
//! copies them into its writable cache at start, so a new pod is ready in
//! milliseconds instead of compiling for seconds. With --portable-code (set in
//! the image, for `compile` and `serve` alike) the entries are valid on every
//! node of the architecture, whatever its CPU.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};

use super::CacheArgs;
use super::registry::{RegistryArgs, load_policies};
use crate::cluster::Offline;
use crate::config::Config;
use crate::engine::Engine;

#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// Config file whose policies to compile [default: the built-in policies].
    #[arg(long, env = "STSGUARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: CompileArgs) -> anyhow::Result<()> {
    let CompileArgs {
        config,
        cache,
        registry,
    } = args;
    // Every built-in is compiled, the ones that read the cluster too.
    let config = Config::load_or_default(config.as_deref())?.with_cluster_builtins();
    let registry = registry.registry(&cache)?;
    let options = cache.engine_options();
    let Some(dir) = options.cache_dir.clone() else {
        bail!("`compile` fills a compilation cache: give --cache-dir (and not --no-cache)");
    };
    let started = Instant::now();
    let engine = Engine::new(&options)?;
    let policies =
        // Nothing is evaluated: an empty cluster lets the policies that read one load.
        load_policies(&engine, &registry, &config, &Offline::empty().reader())
            .context("could not compile the policies")?;
    let names: Vec<&str> = policies.policies().iter().map(|p| p.name()).collect();
    println!(
        "compiled {} into {} in {} ms",
        names.join(", "),
        dir.display(),
        started.elapsed().as_millis()
    );
    Ok(())
}
