//! `stsguard build`: a policy project into one component, `build/NAME.wasm`,
//! with the project's own toolchain — cargo for Rust, componentize-py for
//! Python, componentize-js (through the project's npm scripts) for
//! JavaScript. Their output goes to stderr, so stdout holds only the
//! component's path (`module=$(stsguard build)`). A missing toolchain gets a message that says how to install
//! it; what comes out is checked to be a policy this stsguard serves.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use super::project::{Language, Project};
use crate::engine::anatomy::Anatomy;

/// The componentize-py release the Python template is built and tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

const WASM_TARGET: &str = "wasm32-wasip2";

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The policy project [default: the current folder].
    #[arg(default_value = ".")]
    dir: PathBuf,
}

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let project = Project::open(&args.dir)?;
    let started = Instant::now();
    let output = project.component();
    let build_dir = project.dir.join("build");
    std::fs::create_dir_all(&build_dir)
        .with_context(|| format!("could not create {}", build_dir.display()))?;
    match project.language {
        Language::Rust => build_rust(&project, &output)?,
        Language::Python => build_python(&project, &output)?,
        // The project's `build` script names build/NAME.wasm itself.
        Language::Javascript => build_javascript(&project)?,
    }
    let bytes = std::fs::read(&output).with_context(|| {
        format!(
            "the build succeeded but left no {}; it is where stsguard build expects the component",
            output.display()
        )
    })?;
    Anatomy::read(&bytes)
        .and_then(|anatomy| anatomy.expect_policy())
        .map_err(|problem| {
            anyhow::anyhow!(
                "the build made {}, but it is no policy this stsguard serves: {problem}",
                output.display()
            )
        })?;
    eprintln!(
        "stsguard build: {} policy `{}`: {} bytes in {:.1} s",
        project.language.template(),
        project.name,
        bytes.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{}", output.display());
    Ok(())
}

fn build_rust(project: &Project, output: &Path) -> anyhow::Result<()> {
    need(
        "cargo",
        &["--version"],
        "cargo is not installed: install Rust with rustup (https://rustup.rs), then `rustup \
         target add wasm32-wasip2`",
    )?;
    if let Ok(installed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        && installed.status.success()
        && !String::from_utf8_lossy(&installed.stdout)
            .lines()
            .any(|line| line.trim() == WASM_TARGET)
    {
        bail!(
            "the {WASM_TARGET} target is not installed (policies are components built for it): \
             rustup target add {WASM_TARGET}"
        );
    }
    let manifest = std::fs::canonicalize(project.dir.join("Cargo.toml"))
        .context("could not find Cargo.toml")?;
    let run = Command::new("cargo")
        .current_dir(&project.dir)
        .args(["build", "--release", "--target", WASM_TARGET])
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .context("could not run cargo")?;
    if !run.status.success() {
        bail!("cargo build failed (its errors are above)");
    }
    // The component is the cdylib artefact of this project's package, wherever
    // CARGO_TARGET_DIR puts it.
    let artefact = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact"
                && message["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path())
        })
        .flat_map(|message| {
            message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|file| file.as_str().map(PathBuf::from))
                .collect::<Vec<_>>()
        })
        .find(|file| file.extension().is_some_and(|e| e == "wasm"))
        .with_context(|| {
            "cargo built no .wasm for this package: Cargo.toml needs `crate-type = [\"cdylib\"]` \
             under [lib]"
                .to_string()
        })?;
    std::fs::copy(&artefact, output).with_context(|| {
        format!(
            "could not copy {} to {}",
            artefact.display(),
            output.display()
        )
    })?;
    Ok(())
}

fn build_python(project: &Project, output: &Path) -> anyhow::Result<()> {
    need(
        "componentize-py",
        &["--version"],
        &format!(
            "componentize-py is not installed: pip install componentize-py=={COMPONENTIZE_PY} \
             (the version this stsguard is tested with)"
        ),
    )?;
    let status = Command::new("componentize-py")
        .current_dir(&project.dir)
        .stdout(std::io::stderr())
        .args([
            "--wit-path",
            "wit",
            "--world",
            "policy",
            "componentize",
            "policy",
            "-o",
        ])
        .arg(output.strip_prefix(&project.dir).unwrap_or(output))
        .status()
        .context("could not run componentize-py")?;
    if !status.success() {
        bail!("componentize-py failed (its errors are above)");
    }
    Ok(())
}

fn build_javascript(project: &Project) -> anyhow::Result<()> {
    need(
        "npm",
        &["--version"],
        "npm is not installed: install Node.js (20.19 or newer) with npm (https://nodejs.org)",
    )?;
    if !project.dir.join("node_modules").is_dir() {
        // The toolchain is pinned by the project's package-lock.json.
        let install = if project.dir.join("package-lock.json").is_file() {
            "ci"
        } else {
            "install"
        };
        eprintln!("stsguard build: npm {install} (the project's pinned toolchain)");
        let status = Command::new("npm")
            .current_dir(&project.dir)
            .args([install, "--no-audit", "--no-fund"])
            .stdout(std::io::stderr())
            .status()
            .context("could not run npm")?;
        if !status.success() {
            bail!("npm {install} failed (its errors are above)");
        }
    }
    let status = Command::new("npm")
        .current_dir(&project.dir)
        .args(["run", "--silent", "build"])
        .stdout(std::io::stderr())
        .status()
        .context("could not run npm")?;
    if !status.success() {
        bail!("npm run build failed (its errors are above)");
    }
    Ok(())
}

/// Checks that `program` runs; `help` says how to install it.
fn need(program: &str, args: &[&str], help: &str) -> anyhow::Result<()> {
    match Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!("{help}"),
        Err(error) => bail!("could not run {program}: {error}"),
    }
}
