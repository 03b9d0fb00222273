//! A policy project: the folder `stsguard new` makes and `stsguard build`
//! builds — which language it is in, and what its policy is called.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The languages `stsguard new` has templates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Python,
    Javascript,
}

impl Language {
    /// The name templates are filed under.
    pub fn template(self) -> &'static str {
        match self {
            Self::Rust => "rust",
            Self::Python => "python",
            Self::Javascript => "javascript",
        }
    }

    /// The file that marks a project of this language.
    fn marker(self) -> &'static str {
        match self {
            Self::Rust => "Cargo.toml",
            Self::Python => "pyproject.toml",
            Self::Javascript => "package.json",
        }
    }
}

/// A policy project found in a folder.
#[derive(Debug)]
pub struct Project {
    pub dir: PathBuf,
    pub language: Language,
    /// The policy's name (kebab-case): the component is `build/<name>.wasm`.
    pub name: String,
}

impl Project {
    /// The project in `dir`, told by its marker file.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("{} is not a folder", dir.display());
        }
        let found: Vec<Language> = [Language::Rust, Language::Python, Language::Javascript]
            .into_iter()
            .filter(|language| dir.join(language.marker()).is_file())
            .collect();
        let language = match found[..] {
            [language] => language,
            [] => bail!(
                "{} is not a policy project: it has no Cargo.toml (Rust), pyproject.toml (Python) \
                 or package.json (JavaScript); `stsguard new NAME --lang rust|python|javascript` \
                 makes one",
                dir.display()
            ),
            _ => bail!(
                "{} has the marker files of several languages ({}); build it with its own \
                 toolchain, or keep one",
                dir.display(),
                found
                    .iter()
                    .map(|l| l.marker())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if !dir.join("wit").is_dir() && language != Language::Rust {
            bail!(
                "{} has no wit/ folder with the stsguard WIT; `stsguard new` writes it",
                dir.display()
            );
        }
        let marker = dir.join(language.marker());
        let text = std::fs::read_to_string(&marker)
            .with_context(|| format!("could not read {}", marker.display()))?;
        let name = match language {
            Language::Rust | Language::Python => toml_name(&text),
            Language::Javascript => serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("{} is not valid JSON", marker.display()))?["name"]
                .as_str()
                .map(str::to_string),
        }
        .with_context(|| format!("{} names no package (`name`)", marker.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            language,
            name,
        })
    }

    /// Where `stsguard build` leaves the component.
    pub fn component(&self) -> PathBuf {
        let file = Path::new("build").join(format!("{}.wasm", self.name));
        if self.dir == Path::new(".") {
            file
        } else {
            self.dir.join(file)
        }
    }
}

/// `name = "..."` of a Cargo.toml's `[package]` or a pyproject's `[project]`.
fn toml_name(text: &str) -> Option<String> {
    let mut section = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if !matches!(section, "[package]" | "[project]") {
            continue;
        }
        let Some(value) = line.strip_prefix("name") else {
            continue;
        };
        let value = value.trim_start().strip_prefix('=')?.trim();
        return Some(value.trim_matches(|c| c == '"' || c == '\'').to_string());
    }
    None
}

/// Checks a name for `stsguard new`: it becomes a package, a policy name (in
/// URLs, metrics, warnings) and a file name.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    // The policy-name rule, and what cargo and npm add: a letter first, no `-` last.
    let fits = crate::config::check_policy_name(name).is_ok()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-');
    if !fits {
        bail!(
            "`{name}` cannot name a policy: use 1-63 characters of a-z, 0-9 and `-`, starting \
             with a letter (e.g. `replica-limit`)"
        );
    }
    Ok(())
}

/// `replica-limit` → `ReplicaLimit`.
pub fn camel_case(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_converted() {
        check_name("replica-limit").unwrap();
        check_name("a1").unwrap();
        for bad in ["", "1abc", "Abc", "a_b", "a-", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(camel_case("replica-limit"), "ReplicaLimit");
        assert_eq!(camel_case("demo"), "Demo");
    }

    #[test]
    fn the_name_comes_from_the_package_section() {
        let cargo = "[workspace]\nname = \"no\"\n[package]\nname = \"demo\"\nversion = \"0.1.0\"\n";
        assert_eq!(toml_name(cargo).as_deref(), Some("demo"));
        assert_eq!(
            toml_name("[project]\nname='py-demo'\n").as_deref(),
            Some("py-demo")
        );
        assert_eq!(toml_name("[tool.x]\nname = \"x\"\n"), None);
    }

    #[test]
    fn a_folder_without_a_project_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let error = Project::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("is not a policy project"), "{error}");
        assert!(error.contains("stsguard new NAME --lang"), "{error}");
        std::fs::write(dir.path().join("package.json"), r#"{"name": "demo"}"#).unwrap();
        let error = Project::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("no wit/ folder"), "{error}");
        std::fs::create_dir(dir.path().join("wit")).unwrap();
        let project = Project::open(dir.path()).unwrap();
        assert_eq!(
            (project.language, project.name.as_str()),
            (Language::Javascript, "demo")
        );
        assert_eq!(project.component(), dir.path().join("build/demo.wasm"));
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"demo\"\n",
        )
        .unwrap();
        let error = Project::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("several languages"), "{error}");
    }
}
