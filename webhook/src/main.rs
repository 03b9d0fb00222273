//! The `stsguard` binary: see the library for how it works.

use std::process::ExitCode;

use clap::Parser;
use stsguard_webhook::cli::Cli;

fn main() -> ExitCode {
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("no other TLS crypto provider is installed before main");
    let cli = Cli::parse();
    cli.init_tracing();
    cli.run()
}
