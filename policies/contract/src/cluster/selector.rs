//! Label selectors, both ways Kubernetes writes them: the text of `kubectl -l`
//! and `?labelSelector=` ([`Selector`]), which a policy passes to `cluster.list`,
//! and the structured `LabelSelector` of a PodDisruptionBudget or a Deployment
//! ([`LabelSelector`]), which policies match pod labels against. Both follow
//! k8s.io/apimachinery `pkg/labels` and `metav1.LabelSelectorAsSelector`: the
//! host's cache, the offline context and the SDK's fake cluster all select with
//! this code, so a list answers the same everywhere.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Labels of an object: `metadata.labels`.
pub type Labels = BTreeMap<String, String>;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key` — the label is set.
    Exists(String),
    /// `!key` — the label is not set.
    DoesNotExist(String),
    /// `key=value`, `key==value`, `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value`, `key notin (a,b)`: also true when the label is not set.
    NotIn(String, Vec<String>),
    /// `key>n`: the label is set to an integer greater than `n`.
    GreaterThan(String, i64),
    /// `key<n`.
    LessThan(String, i64),
}

impl Requirement {
    /// Whether `labels` satisfy the requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Self::Exists(key) => labels.contains_key(key),
            Self::DoesNotExist(key) => !labels.contains_key(key),
            Self::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Self::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Self::GreaterThan(key, n) => number(labels, key).is_some_and(|v| v > *n),
            Self::LessThan(key, n) => number(labels, key).is_some_and(|v| v < *n),
        }
    }
}

fn number(labels: &Labels, key: &str) -> Option<i64> {
    labels.get(key)?.parse().ok()
}

/// A parsed label selector: every requirement must hold. The empty selector
/// selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses kubectl's syntax: `app=web,tier in (a,b),!canary,version!=2,replicas>1`.
    /// Whitespace around tokens is allowed; the empty string selects everything.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text)? {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(format!(
                    "label selector `{text}` has an empty requirement (two commas, or one at the end)"
                ));
            }
            requirements.push(requirement(part).map_err(|e| {
                format!(
                    "label selector `{text}`: {e} (expected e.g. `app=web,tier in (a,b),!canary`)"
                )
            })?);
        }
        Ok(Self { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match requirement {
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::DoesNotExist(k) => write!(f, "!{k}")?,
                Requirement::In(k, v) if v.len() == 1 => write!(f, "{k}={}", v[0])?,
                Requirement::In(k, v) => write!(f, "{k} in ({})", v.join(","))?,
                Requirement::NotIn(k, v) if v.len() == 1 => write!(f, "{k}!={}", v[0])?,
                Requirement::NotIn(k, v) => write!(f, "{k} notin ({})", v.join(","))?,
                Requirement::GreaterThan(k, n) => write!(f, "{k}>{n}")?,
                Requirement::LessThan(k, n) => write!(f, "{k}<{n}")?,
            }
        }
        Ok(())
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("label selector `{text}` has a `)` without `(`"))?
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("label selector `{text}` has a `(` without `)`"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key_of(key.trim())?));
    }
    for (operator, build) in [
        (
            "==",
            In as fn(String, String) -> Result<Requirement, String>,
        ),
        ("!=", NotIn),
        ("=", In),
        (">", Greater),
        ("<", Less),
    ] {
        if let Some((key, value)) = part.split_once(operator) {
            return build(key_of(key.trim())?, value.trim().to_string());
        }
    }
    // `key in (a,b)` / `key notin (a,b)` / `key`
    let mut words = part.splitn(2, char::is_whitespace);
    let key = key_of(words.next().unwrap_or_default())?;
    let Some(rest) = words.next().map(str::trim) else {
        return Ok(Requirement::Exists(key));
    };
    let (operator, set) = rest
        .split_once(char::is_whitespace)
        .map(|(o, s)| (o, s.trim()))
        .or_else(|| rest.find('(').map(|at| (rest[..at].trim(), &rest[at..])))
        .ok_or_else(|| format!("`{part}` is not a requirement"))?;
    let values = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("`{part}`: the values of `{operator}` go in parentheses"))?
        .split(',')
        .map(|v| value_of(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    match operator {
        "in" => Ok(Requirement::In(key, values)),
        "notin" => Ok(Requirement::NotIn(key, values)),
        other => Err(format!("`{part}`: unknown operator `{other}` (in, notin)")),
    }
}

#[allow(non_snake_case)]
fn In(key: String, value: String) -> Result<Requirement, String> {
    Ok(Requirement::In(key, vec![value_of(&value)?]))
}

#[allow(non_snake_case)]
fn NotIn(key: String, value: String) -> Result<Requirement, String> {
    Ok(Requirement::NotIn(key, vec![value_of(&value)?]))
}

#[allow(non_snake_case)]
fn Greater(key: String, value: String) -> Result<Requirement, String> {
    Ok(Requirement::GreaterThan(key, integer(&value)?))
}

#[allow(non_snake_case)]
fn Less(key: String, value: String) -> Result<Requirement, String> {
    Ok(Requirement::LessThan(key, integer(&value)?))
}

fn integer(value: &str) -> Result<i64, String> {
    value
        .parse()
        .map_err(|_| format!("`{value}` is not an integer (> and < compare numbers)"))
}

/// A label key: `[prefix/]name`, name 1-63 characters of alphanumerics, `-`, `_`,
/// `.`, beginning and ending alphanumeric; prefix a DNS subdomain.
fn key_of(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    });
    if name_ok && prefix_ok {
        Ok(key.to_string())
    } else {
        Err(format!("`{key}` is not a valid label key"))
    }
}

/// A label value: empty, or up to 63 characters as a key's name part.
fn value_of(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Ok(String::new());
    }
    key_of(value)
        .ok()
        .filter(|_| !value.contains('/'))
        .ok_or_else(|| format!("`{value}` is not a valid label value"))
}

/// A `metav1.LabelSelector`, as PodDisruptionBudgets, Deployments and
/// StatefulSets write it. A missing (`null`) selector selects nothing; an empty
/// one (`{}`) selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<Labels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// One of a [`LabelSelector`]'s `matchExpressions`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

impl LabelSelector {
    /// The selector as requirements; an error names what Kubernetes would refuse
    /// (an unknown operator, `In` without values, `Exists` with values).
    pub fn to_selector(&self) -> Result<Selector, String> {
        let mut requirements: Vec<Requirement> = self
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
            .collect();
        for expression in self.match_expressions.iter().flatten() {
            let key = expression.key.clone();
            let values = expression.values.clone().unwrap_or_default();
            requirements.push(match expression.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "matchExpressions: `{key}` {} needs values",
                        expression.operator
                    ));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "matchExpressions: `{key}` {} takes no values",
                        expression.operator
                    ));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(format!(
                        "matchExpressions: `{key}` has the unknown operator `{other}` (In, NotIn, \
                         Exists, DoesNotExist)"
                    ));
                }
            });
        }
        Ok(Selector { requirements })
    }

    /// Whether the selector selects an object with `labels`; an invalid selector
    /// selects nothing, as the API server treats it.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.to_selector().is_ok_and(|s| s.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_every_form() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("replicas", "3")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app = web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("! app", false),
            ("tier in (front,back)", true),
            ("tier in (back)", false),
            ("tier notin (back)", true),
            ("missing notin (back)", true),
            ("tier in(front)", true),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("replicas>2", true),
            ("replicas<3", false),
            ("app>2", false),
            ("example.com/role=x", false),
        ];
        for (text, expected) in cases {
            let selector = Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selector.matches(&web), expected, "{text}");
        }
    }

    #[test]
    fn refuses_what_kubernetes_refuses_naming_it() {
        for (text, says) in [
            ("app=web,", "empty requirement"),
            ("tier in (a", "`(` without `)`"),
            ("tier in a,b)", "`)` without `(`"),
            ("tier within (a)", "unknown operator `within`"),
            ("tier in a", "parentheses"),
            ("bad key=x", "not a valid label key"),
            ("app=we b", "not a valid label value"),
            ("replicas>three", "not an integer"),
            ("-app=x", "not a valid label key"),
        ] {
            let error = Selector::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
            assert!(error.contains(text), "{text}: {error}");
        }
    }

    #[test]
    fn display_round_trips() {
        let text = "app=web,!canary,tier in (a,b),v!=2,n>1,n<9,x notin (y,z),present";
        let selector = Selector::parse(text).unwrap();
        assert_eq!(selector.to_string(), text);
        assert_eq!(Selector::parse(&selector.to_string()).unwrap(), selector);
    }

    #[test]
    fn label_selectors_follow_metav1() {
        let pod = labels(&[("app", "counter"), ("tier", "db")]);
        let selector =
            |json: serde_json::Value| -> LabelSelector { serde_json::from_value(json).unwrap() };
        assert!(
            selector(serde_json::json!({})).matches(&pod),
            "empty selects all"
        );
        assert!(selector(serde_json::json!({"matchLabels": {"app": "counter"}})).matches(&pod));
        assert!(!selector(serde_json::json!({"matchLabels": {"app": "other"}})).matches(&pod));
        assert!(
            selector(
                serde_json::json!({"matchLabels": {"app": "counter"}, "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["db", "cache"]},
                {"key": "canary", "operator": "DoesNotExist"}]})
            )
            .matches(&pod)
        );
        assert!(
            !selector(serde_json::json!({"matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["db"]}]}))
            .matches(&pod)
        );
        let invalid = selector(serde_json::json!({"matchExpressions": [
            {"key": "tier", "operator": "Within", "values": ["db"]}]}));
        assert!(
            !invalid.matches(&pod),
            "an invalid selector selects nothing"
        );
        assert!(
            invalid
                .to_selector()
                .unwrap_err()
                .contains("unknown operator `Within`")
        );
    }
}
