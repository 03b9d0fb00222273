//! StatefulSet requests with what kubectl shows of them: the stored object, or the
//! denial, and the admission warnings.
//!
//! kube's typed `Api` returns the object but not the response headers, and admission
//! warnings only travel in `Warning` headers (`299 - "text"`). So a [`Submission`]
//! builds the request with `kube::core::Request`, sends it with `Client::send`, and
//! reads the headers itself.

use std::fmt;

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Container;
use kube::api::{Patch, PatchParams, PostParams};
use kube::client::Body;
use kube::core::Status;
use kube::{Client, ResourceExt};
use serde_json::Value;

/// The field manager the suite's writes are recorded under.
const FIELD_MANAGER: &str = "stsguard-e2e";

/// A StatefulSet request, ready to send. Build one with `Scenario::create` or
/// `Scenario::patch`, then pass it to [`accepts`] or [`rejects`].
pub struct Submission {
    client: Client,
    namespace: String,
    action: Action,
    dry_run: bool,
}

#[derive(Debug)]
enum Action {
    Create(Value),
    /// A strategic merge patch of the named StatefulSet (what `kubectl patch` sends).
    Patch {
        name: String,
        patch: Value,
    },
}

impl Submission {
    pub(crate) fn create(client: Client, namespace: &str, object: Value) -> Self {
        Submission {
            client,
            namespace: namespace.to_string(),
            action: Action::Create(object),
            dry_run: false,
        }
    }

    pub(crate) fn patch(client: Client, namespace: &str, name: &str, patch: Value) -> Self {
        Submission {
            client,
            namespace: namespace.to_string(),
            action: Action::Patch {
                name: name.to_string(),
                patch,
            },
            dry_run: false,
        }
    }

    /// Sends the request as a server-side dry run (`?dryRun=All`): admitted and
    /// mutated like the real one, stored nowhere.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Sends the request and reports what the API server answered.
    pub async fn send(self) -> anyhow::Result<Outcome> {
        let what = self.to_string();
        let request = kube::core::Request::new(format!(
            "/apis/apps/v1/namespaces/{}/statefulsets",
            self.namespace
        ));
        let request = match &self.action {
            Action::Create(object) => {
                let params = PostParams {
                    dry_run: self.dry_run,
                    field_manager: Some(FIELD_MANAGER.into()),
                };
                request.create(&params, serde_json::to_vec(object)?)
            }
            Action::Patch { name, patch } => {
                let params = PatchParams {
                    dry_run: self.dry_run,
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                };
                request.patch(name, &params, &Patch::Strategic(patch))
            }
        }
        .with_context(|| format!("building {what}"))?;

        let response = self
            .client
            .send(request.map(Body::from))
            .await
            .with_context(|| format!("sending {what}"))?;
        let code = response.status();
        let warnings: Vec<String> = response
            .headers()
            .get_all(http::header::WARNING)
            .iter()
            .flat_map(|value| parse_warnings(&String::from_utf8_lossy(value.as_bytes())))
            .collect();
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .with_context(|| format!("reading the answer to {what}"))?;

        if code.is_success() {
            let raw: Value = serde_json::from_slice(&body)
                .with_context(|| format!("parsing the answer to {what}"))?;
            let object: StatefulSet = serde_json::from_value(raw.clone())
                .with_context(|| format!("the answer to {what} is not a StatefulSet"))?;
            Ok(Outcome::Admitted(Box::new(Admitted {
                object,
                raw,
                warnings,
            })))
        } else {
            let status: Status = serde_json::from_slice(&body).unwrap_or_else(|_| {
                Status::failure(&String::from_utf8_lossy(&body), "NotAStatus")
                    .with_code(code.as_u16())
            });
            Ok(Outcome::Denied(Denial {
                code: code.as_u16(),
                reason: status.reason,
                message: status.message,
                warnings,
            }))
        }
    }
}

impl fmt::Display for Submission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dry = if self.dry_run { " (dry run)" } else { "" };
        match &self.action {
            Action::Create(object) => write!(
                f,
                "create StatefulSet {}/{}{dry}",
                self.namespace,
                object["metadata"]["name"].as_str().unwrap_or("<generated>")
            ),
            Action::Patch { name, .. } => {
                write!(f, "patch StatefulSet {}/{name}{dry}", self.namespace)
            }
        }
    }
}

/// What the API server answered.
#[derive(Debug)]
pub enum Outcome {
    Admitted(Box<Admitted>),
    Denied(Denial),
}

/// An admitted request: the object as stored (or as it would be, for a dry run).
#[derive(Debug, Clone)]
pub struct Admitted {
    pub object: StatefulSet,
    /// The same object as JSON, with every field the API server returned.
    pub raw: Value,
    pub warnings: Vec<String>,
}

/// A refused request.
#[derive(Debug, Clone)]
pub struct Denial {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub warnings: Vec<String>,
}

/// Expects the request to be admitted; returns the stored object and the warnings.
pub async fn accepts(submission: Submission) -> anyhow::Result<Admitted> {
    let what = submission.to_string();
    match submission.send().await? {
        Outcome::Admitted(admitted) => Ok(*admitted),
        Outcome::Denied(denial) => bail!(
            "expected the API server to accept `{what}`, but it answered {} {}: {}\nwarnings: {:#?}",
            denial.code,
            denial.reason,
            denial.message,
            denial.warnings
        ),
    }
}

/// Expects the request to be denied by an admission webhook; returns the denial.
pub async fn rejects(submission: Submission) -> anyhow::Result<Denial> {
    let what = submission.to_string();
    match submission.send().await? {
        Outcome::Admitted(admitted) => bail!(
            "expected `{what}` to be denied, but it was admitted as:\n{}\nwarnings: {:#?}",
            serde_json::to_string_pretty(&admitted.raw["spec"]).unwrap_or_default(),
            admitted.warnings
        ),
        Outcome::Denied(denial) if denial.message.contains("denied the request") => Ok(denial),
        Outcome::Denied(denial) => bail!(
            "expected an admission webhook to deny `{what}`, but it failed otherwise: {} {}: {}",
            denial.code,
            denial.reason,
            denial.message
        ),
    }
}

impl Admitted {
    pub fn name(&self) -> String {
        self.object.name_any()
    }

    /// The stored `spec`, as JSON. (Read from JSON rather than from the typed
    /// `StatefulSet`, whose `spec` is optional or not depending on the Kubernetes
    /// version k8s-openapi is built for.)
    pub fn spec(&self) -> &Value {
        &self.raw["spec"]
    }

    pub fn replicas(&self) -> Option<i64> {
        self.spec()["replicas"].as_i64()
    }

    pub fn pod_management_policy(&self) -> &str {
        // The API server defaults the field, so it is always there once stored.
        self.spec()["podManagementPolicy"]
            .as_str()
            .unwrap_or("OrderedReady")
    }

    /// The pod template's containers.
    pub fn containers(&self) -> Vec<Container> {
        serde_json::from_value(self.spec()["template"]["spec"]["containers"].clone())
            .unwrap_or_default()
    }

    /// Whether every container has both a readiness and a liveness probe.
    pub fn every_container_has_probes(&self) -> bool {
        let containers = self.containers();
        !containers.is_empty()
            && containers
                .iter()
                .all(|c| c.readiness_probe.is_some() && c.liveness_probe.is_some())
    }

    /// Whether no container has any probe.
    pub fn no_container_has_probes(&self) -> bool {
        self.containers()
            .iter()
            .all(|c| c.readiness_probe.is_none() && c.liveness_probe.is_none())
    }

    /// The warnings stsguard added (`stsguard/<policy>: ...`).
    pub fn stsguard_warnings(&self) -> Vec<&str> {
        stsguard_warnings(&self.warnings)
    }

    /// The warnings of one policy, in enforce (`stsguard/<policy>: `) or monitor
    /// (`stsguard/<policy> (monitor): `) mode.
    pub fn warnings_of(&self, policy: &str, monitor: bool) -> Vec<&str> {
        let prefix = if monitor {
            format!("stsguard/{policy} (monitor): ")
        } else {
            format!("stsguard/{policy}: ")
        };
        self.warnings
            .iter()
            .filter(|w| w.starts_with(&prefix))
            .map(String::as_str)
            .collect()
    }
}

/// The warnings in `warnings` that stsguard wrote.
pub fn stsguard_warnings(warnings: &[String]) -> Vec<&str> {
    warnings
        .iter()
        .filter(|w| w.starts_with("stsguard/"))
        .map(String::as_str)
        .collect()
}

/// Parses one `Warning` header value (RFC 7234 §5.5, as Kubernetes writes it):
/// `299 - "text"`, possibly several separated by commas, each with an optional
/// quoted date. Returns the texts. A value that does not parse is returned whole,
/// so that no warning is ever lost.
pub fn parse_warnings(header: &str) -> Vec<String> {
    fn token(s: &str) -> Option<(&str, &str)> {
        let s = s.trim_start();
        let end = s
            .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
            .unwrap_or(s.len());
        (end > 0).then(|| (&s[..end], &s[end..]))
    }
    fn quoted(s: &str) -> Option<(String, &str)> {
        let s = s.trim_start().strip_prefix('"')?;
        let mut text = String::new();
        let mut chars = s.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => text.push(chars.next()?.1),
                '"' => return Some((text, &s[i + 1..])),
                c => text.push(c),
            }
        }
        None
    }
    fn parse(mut rest: &str) -> Option<Vec<String>> {
        let mut texts = Vec::new();
        loop {
            let (code, r) = token(rest)?;
            if !code.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let (_agent, r) = token(r)?;
            let (text, r) = quoted(r)?;
            texts.push(text);
            let mut r = r.trim_start();
            if r.starts_with('"') {
                r = quoted(r)?.1.trim_start(); // the optional warn-date
            }
            if r.is_empty() {
                return Some(texts);
            }
            rest = r.strip_prefix(',')?;
        }
    }
    parse(header).unwrap_or_else(|| vec![header.to_string()])
}

#[cfg(test)]
mod tests {
    use super::parse_warnings;

    #[test]
    fn one_kubernetes_warning() {
        assert_eq!(
            parse_warnings(r#"299 - "stsguard/parallel: set podManagementPolicy to Parallel""#),
            ["stsguard/parallel: set podManagementPolicy to Parallel"]
        );
    }

    #[test]
    fn escaped_quotes_and_backslashes() {
        assert_eq!(
            parse_warnings(r#"299 - "container \"web\" has no port; path C:\\x""#),
            [r#"container "web" has no port; path C:\x"#]
        );
    }

    #[test]
    fn several_in_one_header_with_dates() {
        assert_eq!(
            parse_warnings(
                r#"299 - "a, b", 299 api "c" "Sat, 01 Jan 2000 00:00:00 GMT",299 - "d""#
            ),
            ["a, b", "c", "d"]
        );
    }

    #[test]
    fn unicode_text_is_kept() {
        assert_eq!(parse_warnings(r#"299 - "größe ≥ 1Mi""#), ["größe ≥ 1Mi"]);
    }

    #[test]
    fn malformed_value_is_returned_whole() {
        assert_eq!(parse_warnings("not a warning"), ["not a warning"]);
        assert_eq!(
            parse_warnings(r#"299 - "unterminated"#),
            [r#"299 - "unterminated"#]
        );
    }
}
