//! `stsguard new`: a ready policy project from a template carried in the
//! binary, so it works without a stsguard checkout and offline: the source,
//! the WIT it builds against, a README, a test suite, an example manifest and
//! a config to serve it (for Rust also the SDK's sources, as `sdk/`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::project::{self, Language};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The policy's name: a-z, 0-9 and `-` (e.g. `replica-limit`). It names
    /// the folder, the package and the policy.
    name: String,
    /// The language to write the policy in.
    #[arg(long, value_enum, default_value_t = Language::Rust)]
    lang: Language,
    /// Where to make the project [default: ./NAME]. It must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    let NewArgs { name, lang, dir } = args;
    project::check_name(&name)?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    let written = write_project(&dir, &name, lang)?;
    eprintln!(
        "made {} ({} policy `{name}`): {}\n\nnext:\n  cd {}\n  stsguard build          # -> build/{name}.wasm\n  stsguard test           # runs tests.yaml\n  stsguard serve --config stsguard.yaml",
        dir.display(),
        lang.template(),
        written.join(", "),
        dir.display(),
    );
    Ok(())
}

/// Writes the template of `language` into `dir`; returns the top-level entries.
fn write_project(dir: &Path, name: &str, language: Language) -> anyhow::Result<Vec<String>> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("could not read {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} already exists and is not empty; choose another name or --dir",
            dir.display()
        );
    }
    let camel = project::camel_case(name);
    let fill = |text: &str| {
        text.replace("{{name_camel}}", &camel)
            .replace("{{name_snake}}", &name.replace('-', "_"))
            .replace("{{name}}", name)
    };
    let mut top = Vec::new();
    for (template, path, bytes) in TEMPLATE_FILES {
        if *template != "common" && *template != language.template() {
            continue;
        }
        let target = dir.join(fill(path));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("could not create {}", parent.display()))?;
        }
        let contents = match std::str::from_utf8(bytes) {
            Ok(text) => fill(text).into_bytes(),
            Err(_) => bytes.to_vec(),
        };
        std::fs::write(&target, contents)
            .with_context(|| format!("could not write {}", target.display()))?;
        let first = fill(path.split('/').next().unwrap_or(path));
        let first = if path.contains('/') {
            format!("{first}/")
        } else {
            first
        };
        if !top.contains(&first) {
            top.push(first);
        }
    }
    top.sort();
    Ok(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(language: &str, path: &str) -> &'static str {
        let (_, _, bytes) = TEMPLATE_FILES
            .iter()
            .find(|(l, p, _)| *l == language && *p == path)
            .unwrap_or_else(|| panic!("no {language} template file {path}"));
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn every_language_gets_the_wit_a_suite_an_example_and_a_config() {
        for language in [Language::Rust, Language::Python, Language::Javascript] {
            let dir = tempfile::tempdir().unwrap();
            let project = dir.path().join("replica-limit");
            write_project(&project, "replica-limit", language).unwrap();
            for file in [
                "wit/policy.wit",
                "tests.yaml",
                "examples/statefulset.yaml",
                "stsguard.yaml",
                "README.md",
            ] {
                assert!(project.join(file).is_file(), "{language:?}: {file}");
            }
            let config = std::fs::read_to_string(project.join("stsguard.yaml")).unwrap();
            assert!(
                config.contains("module: build/replica-limit.wasm"),
                "{config}"
            );
            let opened = project::Project::open(&project).unwrap();
            assert_eq!(
                (opened.language, opened.name.as_str()),
                (language, "replica-limit")
            );
            let wit = std::fs::read_to_string(project.join("wit/policy.wit")).unwrap();
            assert!(wit.contains(&format!("package {};", stsguard_contract::WIT_PACKAGE)));
            // No placeholder is left anywhere.
            for (l, path, _) in TEMPLATE_FILES {
                if *l == "common" || *l == language.template() {
                    let text = std::fs::read_to_string(
                        project.join(path.replace("{{name}}", "replica-limit")),
                    );
                    if let Ok(text) = text {
                        assert!(
                            !text.contains("{{"),
                            "{language:?} {path} keeps a placeholder"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_rust_project_carries_the_sdk_it_builds_against() {
        let dir = tempfile::tempdir().unwrap();
        write_project(dir.path(), "demo", Language::Rust).unwrap();
        for file in [
            "sdk/Cargo.toml",
            "sdk/src/lib.rs",
            "sdk/contract/Cargo.toml",
            "sdk/contract/src/lib.rs",
            "sdk/contract/cases/mutations.json",
            "src/lib.rs",
        ] {
            assert!(dir.path().join(file).is_file(), "{file}");
        }
        let lib = std::fs::read_to_string(dir.path().join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("impl Policy for Demo {") && lib.contains("name: \"demo\""),
            "{lib}"
        );
    }

    #[test]
    fn an_existing_folder_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let error = write_project(dir.path(), "demo", Language::Python).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("already exists and is not empty"),
            "{error}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
            "mine"
        );
    }

    /// The copied SDK's dependencies are the workspace's, so a new project
    /// builds what the repository tests.
    #[test]
    fn the_copied_sdk_depends_on_what_the_workspace_does() {
        let workspace =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml")).unwrap();
        let contract = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies/contract/Cargo.toml"
        ))
        .unwrap();
        let line = |text: &str, dependency: &str| {
            text.lines()
                .find(|line| line.starts_with(&format!("{dependency} = ")))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("no {dependency} in {text}"))
        };
        let version = |line: String| {
            let start = line.find('"').unwrap() + 1;
            let end = start + line[start..].find('"').unwrap();
            line[start..end].to_string()
        };
        let sdk = template("rust", "sdk/Cargo.toml");
        for dependency in [
            "k8s-openapi",
            "serde",
            "serde_json",
            "serde_path_to_error",
            "serde_yaml",
            "wit-bindgen",
        ] {
            assert_eq!(
                version(line(sdk, dependency)),
                version(line(&workspace, dependency)),
                "{dependency}"
            );
        }
        assert_eq!(line(sdk, "k8s-openapi"), line(&workspace, "k8s-openapi"));
        let copied = template("rust", "sdk/contract/Cargo.toml");
        assert_eq!(line(copied, "jsonptr"), line(&contract, "jsonptr"));
    }
}
