//! The test suite file: which policies, and cases with what they expect.
//!
//! ```yaml
//! config: stsguard.yaml          # the chain of a config file, or:
//! policies:                      # entries as in a config file
//!   - {name: demo, module: build/demo.wasm, settings: {maxReplicas: 5}}
//! context:                      # cluster objects every case's policies see
//!   - examples/services.yaml     # manifest files (any number of objects each),
//!   - {apiVersion: storage.k8s.io/v1, kind: StorageClass, metadata: {name: fast}}  # or inline
//! cases:
//!   - name: too many replicas are denied
//!     object: examples/statefulset.yaml   # a file, or the object inline
//!     settings: {maxReplicas: 2}          # overrides the one policy's settings
//!     context: [examples/pdb.yaml]        # more objects, for this case only
//!     expect: {allowed: false, message: "more than the 2"}
//! ```
//!
//! Policies that read the cluster see exactly the suite's and the case's
//! `context` objects, answered as the server answers from its caches; without
//! any, an empty cluster.
//!
//! Paths are relative to the suite file. Everything a case refers to is read
//! when the suite loads, so a missing file is a suite error naming the case,
//! the field and the line, before any case runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::cli::manifests;
use crate::config::{Config, PolicyConfig};

/// A suite as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SuiteFile {
    /// A config file whose chain the cases run through.
    config: Option<PathBuf>,
    /// Or the chain itself, as a config file's `policies`.
    policies: Option<Value>,
    /// Cluster objects (files or inline) every case's policies see.
    #[serde(default)]
    context: Vec<Value>,
    cases: Vec<CaseFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CaseFile {
    name: String,
    /// The object: a manifest file with one object, or the object inline.
    object: Option<Value>,
    /// The object as it was before an UPDATE (file or inline).
    old_object: Option<Value>,
    /// A whole AdmissionReview or its `request` member (file or inline),
    /// instead of `object`: for requests exactly as an API server sent them.
    request: Option<Value>,
    /// CREATE (the default; UPDATE when `oldObject` is given), UPDATE, DELETE
    /// or CONNECT.
    operation: Option<String>,
    /// Namespace of a namespaced object that names none [default: `default`].
    namespace: Option<String>,
    #[serde(default)]
    user_info: UserInfo,
    /// Settings for the suite's only policy, instead of its configured ones.
    settings: Option<Value>,
    /// More cluster objects (files or inline), for this case only.
    #[serde(default)]
    context: Vec<Value>,
    expect: Expect,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserInfo {
    #[serde(default = "default_username")]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

fn default_username() -> String {
    "stsguard-test".into()
}

/// What a case expects; every key is optional and only what is given is checked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    pub allowed: Option<bool>,
    /// Text the denial message must contain.
    pub message: Option<String>,
    /// A regular expression the denial message must match.
    pub message_matches: Option<String>,
    /// The warnings, in order: each must contain its entry. `[]`: no warnings.
    pub warnings: Option<Vec<String>>,
    /// The exact JSON Patch the webhook returns; `[]`: unchanged.
    pub patch: Option<Value>,
    /// The object after the chain (file or inline), compared whole.
    pub object: Option<Value>,
    /// Text the policy's settings check must fail with: for cases that test
    /// the settings a policy refuses (with `settings`).
    pub settings_rejected: Option<String>,
    /// Whether the chain, run again on its own output, must change nothing —
    /// what Kubernetes requires of mutating webhooks, which it may call again
    /// (`reinvocationPolicy`) [default: true].
    pub idempotent: Option<bool>,
}

/// A suite ready to run: the chain and the cases with every file read.
#[derive(Debug)]
pub struct Suite {
    pub config: Config,
    pub cases: Vec<Case>,
}

#[derive(Debug)]
pub struct Case {
    pub name: String,
    /// The AdmissionRequest (the `request` member), as the API server would send it.
    pub request: Value,
    /// Settings for the suite's only policy, when the case overrides them.
    pub settings: Option<Value>,
    /// The cluster objects its policies see: the suite's, then the case's.
    pub context: Vec<(String, Value)>,
    pub expect: Expect,
}

impl Suite {
    /// Reads a suite and everything it refers to.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let file: SuiteFile = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a valid test suite", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut place = Placer {
            path,
            text: &text,
            base,
            from: 0,
        };
        let config = match (&file.config, &file.policies) {
            (Some(config), None) => Config::load(&base.join(config))
                .map_err(|e| place.error(&config.display().to_string(), "config", e.to_string()))?,
            (None, Some(policies)) => {
                let text = serde_json::json!({"policies": policies}).to_string();
                let mut config = Config::parse(&text)
                    .map_err(|e| place.error("policies", "policies", e.to_string()))?;
                resolve_modules(&mut config.policies, base);
                config
            }
            (Some(_), Some(_)) => bail!(
                "{}: give either `config` (a config file) or `policies`, not both",
                path.display()
            ),
            (None, None) => bail!(
                "{}: say which policies the cases run through: `config: stsguard.yaml` or \
                 `policies: [{{name: ..., module: ...}}]`",
                path.display()
            ),
        };
        // Offline there is always a cluster, the context (maybe empty): a
        // config's default chain includes the built-ins that read it.
        let config = config.with_cluster_builtins();
        if file.cases.is_empty() {
            bail!("{}: the suite has no cases", path.display());
        }
        let mut suite_context = Vec::new();
        for (index, entry) in file.context.iter().enumerate() {
            suite_context.extend(place.objects(entry, &format!("context[{index}]"))?);
        }
        let mut cases = Vec::new();
        for (index, case) in file.cases.into_iter().enumerate() {
            let field = |name: &str| format!("cases[{index}] ({:?}).{name}", case.name);
            place = place.in_case(&case.name);
            if case.settings.is_some() && config.policies.len() != 1 {
                return Err(place.error(
                    "settings:",
                    &field("settings"),
                    format!(
                        "a case may override settings only in a suite of one policy (this one \
                         has {})",
                        config.policies.len()
                    ),
                ));
            }
            let request = case_request(&case, &place, &field)?;
            let expect = Expect {
                object: match &case.expect.object {
                    Some(object) => Some(place.object(object, &field("expect.object"))?),
                    None => None,
                },
                ..case.expect.clone()
            };
            if let Some(pattern) = &expect.message_matches {
                regex::Regex::new(pattern).map_err(|e| {
                    place.error(pattern, &field("expect.messageMatches"), e.to_string())
                })?;
            }
            let mut context = suite_context.clone();
            for (number, entry) in case.context.iter().enumerate() {
                context.extend(place.objects(entry, &field(&format!("context[{number}]")))?);
            }
            cases.push(Case {
                name: case.name,
                request,
                settings: case.settings,
                context,
                expect,
            });
        }
        Ok(Self { config, cases })
    }

    /// The chain with the suite's only policy given other settings.
    pub fn config_with(&self, settings: &Value) -> Config {
        let mut config = self.config.clone();
        let policy: &mut PolicyConfig = &mut config.policies[0];
        policy.settings = settings.clone();
        config
    }
}

fn resolve_modules(policies: &mut [PolicyConfig], base: &Path) {
    for policy in policies {
        if let crate::config::ModuleSource::File(file) = &mut policy.module
            && file.is_relative()
        {
            *file = base.join(&*file);
        }
    }
}

/// The AdmissionRequest a case describes.
fn case_request(
    case: &CaseFile,
    place: &Placer<'_>,
    field: &dyn Fn(&str) -> String,
) -> anyhow::Result<Value> {
    let mut request = match (&case.request, &case.object) {
        (Some(_), Some(_)) => {
            return Err(place.error(
                &case.name,
                &field("request"),
                "give either `request` or `object`, not both".into(),
            ));
        }
        (Some(request), None) => {
            let review = place.document(request, &field("request"))?;
            match review.get("request") {
                Some(request) if review["kind"] == "AdmissionReview" => request.clone(),
                _ => review,
            }
        }
        (None, Some(object)) => {
            let object = place.object(object, &field("object"))?;
            let old = match &case.old_object {
                Some(old) => Some(place.object(old, &field("oldObject"))?),
                None => None,
            };
            let uid = format!("stsguard-test-{}", slug(&case.name));
            let groups: Vec<&str> = case.user_info.groups.iter().map(String::as_str).collect();
            let who = stsguard_contract::request::Requester {
                uid: &uid,
                username: &case.user_info.username,
                groups: &groups,
                dry_run: false,
                field_manager: None,
            };
            manifests::admission_request(&object, old, &who)
                .map_err(|e| place.error(&case.name, &field("object"), e.to_string()))?
        }
        (None, None) => {
            return Err(place.error(
                &case.name,
                &field("object"),
                "a case needs the `object` to admit (a manifest file or inline), or a `request`"
                    .into(),
            ));
        }
    };
    if let Some(namespace) = &case.namespace {
        request["namespace"] = Value::String(namespace.clone());
    }
    if let Some(operation) = &case.operation {
        set_operation(&mut request, operation)
            .map_err(|e| place.error(operation, &field("operation"), e))?;
    }
    Ok(request)
}

/// Makes `request` one of `operation`, as the API server shapes it: a DELETE
/// carries the object as `oldObject` and no `object`.
fn set_operation(request: &mut Value, operation: &str) -> Result<(), String> {
    let options = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        "DELETE" => "DeleteOptions",
        "CONNECT" => "",
        other => {
            return Err(format!(
                "`{other}` is not an operation; use CREATE, UPDATE, DELETE or CONNECT"
            ));
        }
    };
    request["operation"] = Value::String(operation.into());
    if operation == "DELETE" && request["oldObject"].is_null() {
        request["oldObject"] = request["object"].take();
    }
    if !options.is_empty() {
        request["options"]["kind"] = Value::String(options.into());
    }
    Ok(())
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Reads what a case refers to, and places errors in the suite file.
#[derive(Clone, Copy)]
struct Placer<'a> {
    path: &'a Path,
    text: &'a str,
    base: &'a Path,
    /// The first line errors are searched from: the start of the case at hand.
    from: usize,
}

impl Placer<'_> {
    /// The same, searching from the line that names the case `name` on.
    fn in_case(self, name: &str) -> Self {
        let from = self
            .text
            .lines()
            .enumerate()
            .skip(self.from)
            .find(|(_, line)| {
                // `  - name: NAME`, its value quoted or not.
                let line = line.trim_start().trim_start_matches("- ").trim_start();
                line.strip_prefix("name:")
                    .map(|value| value.trim().trim_matches(|c| c == '"' || c == '\''))
                    == Some(name)
            })
            .map_or(self.from, |(index, _)| index);
        Self { from, ..self }
    }

    /// `suite.yaml:14: cases[2] ("name").object: message`. The line is the first
    /// from `from` on that holds `needle`: serde keeps no positions once a value
    /// is read.
    fn error(&self, needle: &str, field: &str, message: String) -> anyhow::Error {
        let line = self
            .text
            .lines()
            .enumerate()
            .skip(self.from)
            .find(|(_, line)| line.contains(needle))
            .map(|(index, _)| format!(":{}", index + 1))
            .unwrap_or_default();
        anyhow::anyhow!("{}{line}: {field}: {message}", self.path.display())
    }

    /// A value given inline or as the path of a YAML or JSON file.
    fn document(&self, value: &Value, field: &str) -> anyhow::Result<Value> {
        let Value::String(file) = value else {
            return Ok(value.clone());
        };
        let path = self.base.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.error(
                file,
                field,
                format!("could not read {}: {e}", path.display()),
            )
        })?;
        serde_yaml::from_str(&text).map_err(|e| {
            self.error(
                file,
                field,
                format!("{} is not valid YAML or JSON: {e}", path.display()),
            )
        })
    }

    /// Kubernetes objects, inline (one) or from a manifest file (any number),
    /// each with where it came from.
    fn objects(&self, value: &Value, field: &str) -> anyhow::Result<Vec<(String, Value)>> {
        let Value::String(file) = value else {
            let object = self.object(value, field)?;
            return Ok(vec![(format!("{}: {field}", self.path.display()), object)]);
        };
        let path = self.base.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.error(
                file,
                field,
                format!("could not read {}: {e}", path.display()),
            )
        })?;
        manifests::parse_objects(&path.display().to_string(), &text)
            .map_err(|e| self.error(file, field, format!("{e:#}")))
    }

    /// One Kubernetes object, inline or from a manifest file holding exactly one.
    fn object(&self, value: &Value, field: &str) -> anyhow::Result<Value> {
        let Value::String(file) = value else {
            return match value {
                Value::Object(_) => Ok(value.clone()),
                other => Err(self.error(
                    field.rsplit('.').next().unwrap_or(field),
                    field,
                    format!("expected an object or a file name, got {other}"),
                )),
            };
        };
        let path = self.base.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.error(
                file,
                field,
                format!("could not read {}: {e}", path.display()),
            )
        })?;
        let mut objects = manifests::parse_objects(&path.display().to_string(), &text)
            .map_err(|e| self.error(file, field, format!("{e:#}")))?;
        match objects.len() {
            1 => Ok(objects.remove(0).1),
            n => Err(self.error(
                file,
                field,
                format!(
                    "{} holds {n} objects; a case takes exactly one",
                    path.display()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const STS: &str =
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web}\nspec: {replicas: 3}\n";

    #[test]
    fn cases_read_their_files_relative_to_the_suite() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("examples")).unwrap();
        write(dir.path(), "examples/sts.yaml", STS);
        let suite = write(
            dir.path(),
            "tests.yaml",
            "policies:\n  - {name: probes, module: 'builtin:probes'}\ncases:\n  - name: create\n    object: examples/sts.yaml\n    expect: {allowed: true}\n  - name: an update by alice\n    object: examples/sts.yaml\n    oldObject: {apiVersion: apps/v1, kind: StatefulSet, metadata: {name: web}}\n    userInfo: {username: alice, groups: [devs]}\n    expect: {}\n  - name: delete\n    object: examples/sts.yaml\n    operation: DELETE\n    expect: {}\n",
        );
        let suite = Suite::load(&suite).unwrap();
        assert_eq!(suite.config.policies[0].name, "probes");
        let [create, update, delete] = &suite.cases[..] else {
            panic!("{:?}", suite.cases)
        };
        assert_eq!(create.request["operation"], "CREATE");
        assert_eq!(create.request["namespace"], "default");
        assert_eq!(create.request["object"]["spec"]["replicas"], 3);
        assert_eq!(update.request["operation"], "UPDATE");
        assert_eq!(update.request["userInfo"]["username"], "alice");
        assert_eq!(update.request["userInfo"]["groups"][0], "devs");
        assert_eq!(delete.request["operation"], "DELETE");
        assert_eq!(delete.request["object"], Value::Null);
        assert_eq!(delete.request["oldObject"]["metadata"]["name"], "web");
        assert_eq!(delete.request["options"]["kind"], "DeleteOptions");
    }

    #[test]
    fn a_missing_file_is_named_with_its_case_field_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let suite = write(
            dir.path(),
            "tests.yaml",
            "policies:\n  - {name: probes, module: 'builtin:probes'}\ncases:\n  - name: first\n    object: {apiVersion: v1, kind: Pod}\n    expect: {}\n  - name: second\n    object: examples/missing.yaml\n    expect: {}\n",
        );
        let error = format!("{:#}", Suite::load(&suite).unwrap_err());
        let expected = format!(
            "{}:8: cases[1] (\"second\").object: could not read {}",
            suite.display(),
            dir.path().join("examples/missing.yaml").display()
        );
        assert!(error.starts_with(&expected), "{error}");
    }

    #[test]
    fn syntax_errors_and_unknown_keys_say_where() {
        let dir = tempfile::tempdir().unwrap();
        let suite = write(
            dir.path(),
            "tests.yaml",
            "policies: []\ncases:\n  - name: a\n    object: {}\n    expect: {allowd: true}\n",
        );
        let error = format!("{:#}", Suite::load(&suite).unwrap_err());
        assert!(error.contains("unknown field `allowd`"), "{error}");
        assert!(error.contains("line 5"), "{error}");
        let broken = write(dir.path(), "broken.yaml", "cases: [\n");
        let error = format!("{:#}", Suite::load(&broken).unwrap_err());
        assert!(error.contains("is not a valid test suite"), "{error}");
        assert!(error.contains("line"), "{error}");
    }

    #[test]
    fn a_suite_names_its_policies_once() {
        let dir = tempfile::tempdir().unwrap();
        let none = write(dir.path(), "none.yaml", "cases: []\n");
        let error = Suite::load(&none).unwrap_err().to_string();
        assert!(error.contains("say which policies"), "{error}");
        let bad_op = write(
            dir.path(),
            "op.yaml",
            "policies: [{name: p, module: 'builtin:probes'}]\ncases:\n  - name: a\n    object: {apiVersion: v1, kind: Pod}\n    operation: PATCH\n    expect: {}\n",
        );
        let error = Suite::load(&bad_op).unwrap_err().to_string();
        assert!(
            error.contains(":5: cases[0] (\"a\").operation: `PATCH` is not an operation"),
            "{error}"
        );
        let two = write(
            dir.path(),
            "two.yaml",
            "policies: [{name: p, module: 'builtin:probes', settings: {}}, {name: q, module: 'builtin:parallel'}]\ncases:\n  - name: a\n    object: {apiVersion: v1, kind: Pod}\n    settings: {}\n    expect: {}\n",
        );
        let error = Suite::load(&two).unwrap_err().to_string();
        // The case's line, not the first `settings:` of the file.
        assert!(
            error.contains(
                ":5: cases[0] (\"a\").settings: a case may override settings only in a suite of \
                 one policy (this one has 2)"
            ),
            "{error}"
        );
    }
}
