//! The `stsguard` binary: see the library for how it works.

use std::process::ExitCode;

use clap::Parser;
use stsguard_webhook::cli::Cli;

/// mimalloc rather than glibc's malloc: a review is thousands of small
/// allocations (the JSON tree, its copy, the diff), and they took a fifth of the
/// host's time in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("no other TLS crypto provider is installed before main");
    let cli = Cli::parse();
    cli.init_tracing();
    cli.run()
}
