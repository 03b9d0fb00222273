//! `docs/cli.md`, the command-line reference, is generated from the clap
//! definitions in `src/cli.rs` (their `///` comments are the help text), so the
//! page says what `--help` says. This test fails when the page is stale;
//! `BLESS=1 cargo test -p stsguard-webhook --test cli_reference` rewrites it, and
//! the change is reviewed in the diff like any golden file.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_markdown::MarkdownOptions;
use stsguard_webhook::cli::Cli;

const REGENERATE: &str = "BLESS=1 cargo test -p stsguard-webhook --test cli_reference";

fn page() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md")
}

/// The page as it should be: a header saying where it comes from, then what
/// clap-markdown makes of the command, without its advertising footer.
fn reference() -> String {
    let options = MarkdownOptions::new()
        .title("`stsguard` command line".into())
        .show_footer(false);
    let body = clap_markdown::help_markdown_command_custom(&with_env(Cli::command()), &options);
    format!(
        "<!-- Generated from webhook/src/cli.rs by webhook/tests/cli_reference.rs: \
         do not edit; regenerate with `{REGENERATE}`. -->\n\n{}\n",
        body.trim_end()
    )
}

/// Appends each flag's environment variable to its help text, as `--help` does:
/// clap-markdown leaves them out, and in a Pod they are how flags are set.
fn with_env(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let Some(env) = arg.get_env().filter(|_| !arg.is_hide_env_set()) else {
                return arg;
            };
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            let help = format!("{help} [env: `{}`]", env.to_string_lossy());
            arg.long_help(help)
        })
        .mut_subcommands(with_env)
}

fn bless() -> bool {
    std::env::var_os("BLESS").is_some_and(|v| v != "0" && !v.is_empty())
}

#[test]
fn docs_cli_md_matches_the_clap_definitions() {
    let path = page();
    let wanted = reference();
    if bless() {
        std::fs::write(&path, &wanted).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let current = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => panic!(
            "cannot read {}: {e}; generate it with `{REGENERATE}`",
            path.display()
        ),
    };
    if current == wanted {
        return;
    }
    let (now, then): (Vec<_>, Vec<_>) = (current.lines().collect(), wanted.lines().collect());
    let difference = match (0..now.len().max(then.len())).find(|&i| now.get(i) != then.get(i)) {
        Some(i) => format!(
            "first difference, line {}:\n  docs/cli.md: {}\n  generated:   {}",
            i + 1,
            now.get(i).unwrap_or(&"<end of file>"),
            then.get(i).unwrap_or(&"<end of file>"),
        ),
        None => "they differ in line endings or the final newline".into(),
    };
    panic!(
        "docs/cli.md is stale: it no longer matches the flags in webhook/src/cli.rs and webhook/src/cli/; \
         {difference}\nRegenerate it with `{REGENERATE}` and review the diff."
    );
}
