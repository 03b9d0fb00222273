//! Builds the policy components this crate embeds or tests with.
//!
//! The built-in policies live in `policies/` as ordinary crates. Here they are
//! compiled for `wasm32-wasip2` (which makes components) with the size-optimised
//! cargo profile `policy`, by a nested cargo that uses its own target directory
//! (`target/wasm-policies`): the outer cargo holds the lock on its own target
//! directory, and the wasm artefacts are shared by dev, test and release builds of
//! the host, so each policy is compiled once per change, not once per profile.
//!
//! Outputs:
//! - `$OUT_DIR/builtins.rs`: `BUILTIN_MODULES`, the built-ins' bytes by name, in the
//!   default chain order;
//! - `$OUT_DIR/templates.rs`: `TEMPLATE_FILES`, the files `stsguard new` writes
//!   (`policies/templates/`, the WIT, and for Rust the SDK's sources);
//! - the env var `STSGUARD_TEST_POLICY_DIR`: where the test-only policies
//!   (`policies/testing/*`) were built, for this crate's tests and benches;
//! - the env var `STSGUARD_WASMTIME_VERSION`: the wasmtime this build links, from
//!   `Cargo.lock`, for `stsguard_build_info` (wasmtime exports no version constant).

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Built-in policies: (name in `builtin:<name>`, cargo package), in default order.
const BUILTINS: &[(&str, &str)] = &[
    ("probes", "policy-probes"),
    ("parallel", "policy-parallel"),
    ("volume-claims", "policy-volume-claims"),
    ("headless-service", "policy-headless-service"),
    ("storage-class", "policy-storage-class"),
    ("disruption-budget", "policy-disruption-budget"),
];

/// Test-only policies, built alongside but never embedded.
const TEST_POLICIES: &[&str] = &["test-policy-scripted", "test-policy-reader"];

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "policy";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    let policies = workspace.join("policies");
    println!("cargo:rerun-if-changed={}", policies.display());
    // The test policy built against the frozen 0.2.0 contract reads it there.
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("wit").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.toml").display()
    );

    let target_dir = wasm_target_dir(&workspace);
    build_components(&workspace, &target_dir);

    let artefacts = target_dir.join(TARGET).join(PROFILE);
    let mut builtins = String::from(
        "/// The built-in policy components, by name, in the default chain order.\n\
         pub const BUILTIN_MODULES: &[(&str, &[u8])] = &[\n",
    );
    for (name, package) in BUILTINS {
        let wasm = artefacts.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(
            wasm.is_file(),
            "expected {} after the build",
            wasm.display()
        );
        writeln!(
            builtins,
            "    ({name:?}, include_bytes!({:?})),",
            wasm.display()
        )
        .unwrap();
    }
    builtins.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("builtins.rs");
    std::fs::write(&out, builtins).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
    let templates = PathBuf::from(env::var("OUT_DIR").unwrap()).join("templates.rs");
    std::fs::write(&templates, template_files(&policies))
        .unwrap_or_else(|e| panic!("writing {}: {e}", templates.display()));
    println!(
        "cargo:rustc-env=STSGUARD_TEST_POLICY_DIR={}",
        artefacts.display()
    );
    println!(
        "cargo:rustc-env=STSGUARD_WASMTIME_VERSION={}",
        locked_version(&workspace.join("Cargo.lock"), "wasmtime")
    );
}

/// `TEMPLATE_FILES`: (language or `common`, path in the new project, bytes).
/// A Rust project gets the SDK and contract sources as `sdk/` (its Cargo.toml
/// files are in the template), so it builds without a stsguard checkout.
fn template_files(policies: &Path) -> String {
    let templates = policies.join("templates");
    let mut files = Vec::new();
    for language in ["common", "rust", "python", "javascript"] {
        collect(&templates.join(language), "", language, &mut files);
    }
    collect(&policies.join("wit"), "wit", "common", &mut files);
    collect(&policies.join("sdk/src"), "sdk/src", "rust", &mut files);
    collect(
        &policies.join("contract/src"),
        "sdk/contract/src",
        "rust",
        &mut files,
    );
    collect(
        &policies.join("contract/cases"),
        "sdk/contract/cases",
        "rust",
        &mut files,
    );
    files.sort();
    let mut out = String::from(
        "/// The files `stsguard new` writes: (language or `common`, path, bytes).\n\
         pub const TEMPLATE_FILES: &[(&str, &str, &[u8])] = &[\n",
    );
    for (language, path, source) in files {
        writeln!(
            out,
            "    ({language:?}, {path:?}, include_bytes!({:?})),",
            source.display()
        )
        .unwrap();
    }
    out.push_str("];\n");
    out
}

/// Every file under `dir` as (language, `prefix/relative path`, absolute path),
/// leaving out what a build or an editor leaves behind.
fn collect(
    dir: &Path,
    prefix: &str,
    language: &'static str,
    out: &mut Vec<(&'static str, String, PathBuf)>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if matches!(
            name.as_str(),
            "node_modules" | "target" | "build" | "__pycache__"
        ) || name.ends_with('~')
        {
            continue;
        }
        let path = entry.path();
        let relative = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if path.is_dir() {
            collect(&path, &relative, language, out);
        } else {
            out.push((language, relative, path));
        }
    }
}

/// The version of `package` in the lock file (`unknown` if it is not there).
fn locked_version(lock: &Path, package: &str) -> String {
    let text =
        std::fs::read_to_string(lock).unwrap_or_else(|e| panic!("reading {}: {e}", lock.display()));
    let name = format!("name = \"{package}\"");
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line == name
            && let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = \""))
        {
            return version.trim_end_matches('"').to_string();
        }
    }
    "unknown".into()
}

/// `target/wasm-policies` next to wherever cargo puts this build's artefacts.
fn wasm_target_dir(workspace: &Path) -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm-policies"),
        None => workspace.join("target").join("wasm-policies"),
    }
}

fn build_components(workspace: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(workspace)
        .args(["build", "--quiet", "--target", TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(target_dir);
    for (_, package) in BUILTINS {
        command.args(["-p", package]);
    }
    for package in TEST_POLICIES {
        command.args(["-p", package]);
    }
    // The outer build's settings are for the host, not for wasm: flags, wrappers
    // (clippy, sccache) and the target directory must not leak into the guest build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if is_host_only(&key) {
            command.env_remove(key.as_ref());
        }
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("could not run `{cargo}` to build the policies: {e}"));
    if !status.success() {
        panic!(
            "building the policy components failed (see the errors above).\n\
             If the error says the `{TARGET}` target is missing, install it with:\n    \
             rustup target add {TARGET}"
        );
    }
}

/// Whether an environment variable of this build describes the host build (flags,
/// wrappers such as clippy or sccache, the target directory, package metadata) and
/// so must not leak into the nested wasm build. Network, registry and terminal
/// settings, and flags meant for the wasm target, are kept.
fn is_host_only(key: &str) -> bool {
    const KEPT: &[&str] = &[
        "CARGO_HOME",
        "CARGO_MAKEFLAGS",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
        "CARGO_TARGET_WASM32_WASIP2_",
    ];
    if key.starts_with("CARGO_") {
        return !KEPT.iter().any(|kept| key.starts_with(kept));
    }
    matches!(
        key,
        "RUSTFLAGS" | "RUSTDOCFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER"
    )
}
