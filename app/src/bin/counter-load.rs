//! The `counter-load` binary: load a counter-app and print visits/s and latency percentiles.

use clap::Parser;
use counter_app::load::{self, LoadArgs};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let report = load::run(LoadArgs::parse()).await?;
    print!("{report}");
    Ok(())
}
