//! `stsguard policies`: what the built-in policies do and which settings they take,
//! read from each policy's own `metadata` export so it is never out of date.

use anyhow::Context;

use super::CacheArgs;
use super::inspect::{describe_target, reads_line};
use crate::builtin;
use crate::engine::Engine;

#[derive(Debug, clap::Args)]
pub struct PoliciesArgs {
    #[command(flatten)]
    cache: CacheArgs,
}

pub fn run(args: PoliciesArgs) -> anyhow::Result<()> {
    let engine = Engine::new(&args.cache.engine_options())?;
    for name in builtin::names() {
        let bytes = builtin::module(name).expect("listed built-ins exist");
        let module = engine
            .load(bytes)
            .with_context(|| format!("loading the built-in policy `{name}`"))?;
        let metadata = module.metadata();
        let schema: serde_json::Value =
            serde_json::from_str(&metadata.settings_schema).unwrap_or(serde_json::Value::Null);
        let targets: Vec<String> = metadata.targets.iter().map(describe_target).collect();
        println!(
            "builtin:{name}  (version {}, {})",
            metadata.version,
            if metadata.mutating {
                "mutating"
            } else {
                "validating"
            }
        );
        println!("  {}", metadata.description);
        println!("  applies to: {}", targets.join(", "));
        let reads: Vec<String> = metadata.reads.iter().map(ToString::to_string).collect();
        println!("  reads: {}", reads_line(&serde_json::json!(reads)));
        println!("  settings (JSON Schema):");
        let schema = serde_json::to_string_pretty(&schema).unwrap_or_default();
        for line in schema.lines() {
            println!("    {line}");
        }
        println!();
    }
    Ok(())
}
