//! Every text a user reads about what the policies did, and the limits on it.
//!
//! Warnings travel as HTTP `Warning` headers. The API server drops repeated ones
//! and passes on 4096 characters of them in all; past that it cuts each to 256
//! characters and then drops the rest, in an order nobody chose
//! (k8s.io/apiserver `endpoints/filters/warning.go`). So each warning is sent as
//! one printable line of at most [`MAX_WARNING_CHARS`], once, and warnings stop at
//! [`MAX_WARNINGS_TOTAL_CHARS`] with a last one that says so. Denial messages are
//! cut too: a policy's megabyte of text is no use to anyone reading `kubectl`.
//!
//! The host builds its responses from these functions and the SDK's test harness
//! builds what it shows a policy author from the same ones, so the two agree to
//! the character.

use std::fmt;

use serde_json::Value;

/// Longest warning sent, prefix included, in characters.
pub const MAX_WARNING_CHARS: usize = 256;

/// Characters of warnings a response carries at most.
pub const MAX_WARNINGS_TOTAL_CHARS: usize = 4096;

/// Warnings of one verdict looked at: bounds the work a policy returning a
/// million warnings can cause.
pub const MAX_WARNINGS_PER_VERDICT: usize = 1000;

/// Said once, as the last warning, when warnings had to be dropped.
pub const WARNINGS_DROPPED: &str = "stsguard: further warnings were dropped: the API server passes on at most 4096 characters of them";

/// Longest denial message kept, in characters.
pub const MAX_DENIAL_CHARS: usize = 4096;

/// How an object is named in messages: `StatefulSet default/web`,
/// `StatefulSet web` when cluster-scoped, `StatefulSet default/web-*` when the
/// API server is still to generate the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectName<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// `metadata.generateName`, used when `name` is empty.
    pub generate_name: Option<&'a str>,
}

impl<'a> ObjectName<'a> {
    /// The object of an AdmissionRequest (the `request` member of a review).
    pub fn of_request(request: &'a Value) -> Self {
        let text = |value: &'a Value| value.as_str().unwrap_or("");
        Self {
            kind: text(&request["kind"]["kind"]),
            namespace: text(&request["namespace"]),
            name: text(&request["name"]),
            generate_name: request["object"]["metadata"]["generateName"].as_str(),
        }
    }
}

impl fmt::Display for ObjectName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.kind.is_empty() {
            "object"
        } else {
            self.kind
        })?;
        f.write_str(" ")?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        match (self.name, self.generate_name) {
            ("", Some(prefix)) if !prefix.is_empty() => write!(f, "{prefix}*"),
            ("", _) => f.write_str("(unnamed)"),
            (name, _) => f.write_str(name),
        }
    }
}

/// The denial the user reads: `policy volume-claims denied StatefulSet
/// default/web: <message>`. `message` is the policy's, as [`denial_message`] left it.
pub fn denied(policy: &str, object: &ObjectName<'_>, message: &str) -> String {
    format!("policy {policy} denied {object}: {message}")
}

/// A policy's denial message, cut to [`MAX_DENIAL_CHARS`]; a policy that gives
/// none is said to have denied.
pub fn denial_message(message: Option<String>) -> String {
    bounded(message.unwrap_or_else(|| "denied".into()), MAX_DENIAL_CHARS)
}

/// What prefixes a policy's warnings: `stsguard/<policy>: `, or
/// `stsguard/<policy> (monitor): ` for a policy in monitor mode.
pub fn warning_prefix(policy: &str, monitor: bool) -> String {
    if monitor {
        format!("stsguard/{policy} (monitor): ")
    } else {
        format!("stsguard/{policy}: ")
    }
}

/// The denial of a policy that failed while its failurePolicy is `fail`.
/// `reason` is the short label of the failure (`timeout`, `trap`, ...); details
/// stay in the log, under the review's uid.
pub fn failed_denial(reason: &str, uid: &str) -> String {
    format!(
        "the policy could not evaluate this object ({}); its failurePolicy is fail. The \
         stsguard log has details under uid {uid}",
        reason.replace('_', " ")
    )
}

/// The warning of a policy that failed while its failurePolicy is `ignore`.
pub fn failed_skipped(reason: &str) -> String {
    format!(
        "the policy could not evaluate this object ({}) and was skipped",
        reason.replace('_', " ")
    )
}

/// Monitor mode: what an enforced policy would have denied.
pub fn would_deny(message: &str) -> String {
    format!("would deny: {message}")
}

/// Monitor mode: the JSON Patch an enforced policy would have caused.
pub fn would_patch(patch: &str) -> String {
    format!("would apply patch {patch}")
}

/// Adds `new` to `warnings`, each prefixed with `prefix`, as the API server will
/// pass them on: one line each, at most [`MAX_WARNING_CHARS`], no repeats, and
/// [`WARNINGS_DROPPED`] once the total would pass [`MAX_WARNINGS_TOTAL_CHARS`].
pub fn add_warnings(
    warnings: &mut Vec<String>,
    prefix: &str,
    new: impl IntoIterator<Item = String>,
) {
    let dropped =
        |warnings: &[String]| warnings.last().map(String::as_str) == Some(WARNINGS_DROPPED);
    let mut new = new.into_iter();
    for warning in new.by_ref().take(MAX_WARNINGS_PER_VERDICT) {
        if dropped(warnings) {
            return;
        }
        let text = one_line(prefix, &warning);
        if warnings.contains(&text) {
            continue;
        }
        let total: usize = warnings.iter().map(|w| w.chars().count()).sum();
        let room = MAX_WARNINGS_TOTAL_CHARS - WARNINGS_DROPPED.chars().count();
        if total + text.chars().count() > room {
            warnings.push(WARNINGS_DROPPED.into());
            return;
        }
        warnings.push(text);
    }
    if new.next().is_some() && !dropped(warnings) {
        warnings.push(WARNINGS_DROPPED.into());
    }
}

/// `prefix` + `warning` as one printable line of at most [`MAX_WARNING_CHARS`].
fn one_line(prefix: &str, warning: &str) -> String {
    let mut text: String = prefix.to_string();
    for c in warning.trim().chars().take(MAX_WARNING_CHARS + 1) {
        text.push(if c.is_control() { ' ' } else { c });
    }
    bounded(text, MAX_WARNING_CHARS)
}

/// `text`, cut to `max` characters (the last an ellipsis) if it is longer.
fn bounded(mut text: String, max: usize) -> String {
    if text.chars().nth(max).is_some() {
        let (end, _) = text.char_indices().nth(max - 1).expect("longer than max");
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chars(warnings: &[String]) -> usize {
        warnings.iter().map(|w| w.chars().count()).sum()
    }

    #[test]
    fn objects_are_named_as_kubectl_users_know_them() {
        let name = |request: Value| ObjectName::of_request(&request).to_string();
        let kind = json!({"group": "apps", "version": "v1", "kind": "StatefulSet"});
        assert_eq!(
            name(json!({"kind": kind, "namespace": "default", "name": "web"})),
            "StatefulSet default/web"
        );
        assert_eq!(
            name(json!({"kind": kind, "name": "web"})),
            "StatefulSet web"
        );
        assert_eq!(
            name(
                json!({"kind": kind, "namespace": "lab", "object": {"metadata": {"generateName": "web-"}}})
            ),
            "StatefulSet lab/web-*"
        );
        assert_eq!(
            name(json!({"kind": kind, "namespace": "lab"})),
            "StatefulSet lab/(unnamed)"
        );
        assert_eq!(name(json!({})), "object (unnamed)");
        let object = ObjectName {
            kind: "StatefulSet",
            namespace: "default",
            name: "web",
            generate_name: None,
        };
        assert_eq!(
            denied("volume-claims", &object, "add one"),
            "policy volume-claims denied StatefulSet default/web: add one"
        );
    }

    #[test]
    fn failure_texts_name_the_reason_in_words() {
        assert_eq!(
            failed_skipped("memory_budget"),
            "the policy could not evaluate this object (memory budget) and was skipped"
        );
        assert!(failed_denial("trap", "uid-1").contains("(trap); its failurePolicy is fail"));
        assert!(failed_denial("trap", "uid-1").ends_with("under uid uid-1"));
    }

    #[test]
    fn warnings_are_single_short_lines() {
        let mut warnings = Vec::new();
        let long = "x".repeat(1000);
        add_warnings(&mut warnings, "stsguard/p: ", [format!(" a\nb\t{long}")]);
        let [warning] = &warnings[..] else {
            panic!("{warnings:?}")
        };
        assert!(warning.starts_with("stsguard/p: a b x"), "{warning}");
        assert_eq!(warning.chars().count(), MAX_WARNING_CHARS);
        assert!(warning.ends_with('…'));
        assert_eq!(bounded("short".into(), 5), "short");
    }

    #[test]
    fn repeated_warnings_are_sent_once() {
        let mut warnings = Vec::new();
        add_warnings(&mut warnings, "p: ", ["a".into(), "a".into(), "b".into()]);
        add_warnings(&mut warnings, "p: ", ["a".into()]);
        add_warnings(&mut warnings, "q: ", ["a".into()]);
        assert_eq!(warnings, ["p: a", "p: b", "q: a"]);
    }

    #[test]
    fn warnings_stop_at_what_the_api_server_passes_on_and_say_so() {
        let mut warnings = Vec::new();
        add_warnings(&mut warnings, "p: ", (0..100).map(|i| format!("{i:0>100}")));
        assert_eq!(warnings.last().unwrap(), WARNINGS_DROPPED);
        assert!(chars(&warnings) <= MAX_WARNINGS_TOTAL_CHARS);
        let kept = warnings.len();
        assert!(kept > 30, "{kept}");
        add_warnings(&mut warnings, "q: ", ["late".into()]);
        assert_eq!(warnings.len(), kept, "nothing after the notice");
    }

    #[test]
    fn a_million_warnings_cost_little_and_are_noted() {
        let mut warnings = Vec::new();
        add_warnings(
            &mut warnings,
            "p: ",
            std::iter::repeat_n("same".to_string(), 1_000_000),
        );
        assert_eq!(warnings, ["p: same", WARNINGS_DROPPED]);
    }

    #[test]
    fn long_denials_are_cut() {
        let message = denial_message(Some("no ".repeat(5000)));
        assert_eq!(message.chars().count(), MAX_DENIAL_CHARS);
        assert!(message.ends_with('…'));
        assert_eq!(denial_message(Some("no".into())), "no");
        assert_eq!(denial_message(None), "denied");
    }
}
