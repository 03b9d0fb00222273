//! Policy settings: the `settings:` object of the host configuration, as JSON.

use std::fmt;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A policy's settings type.
///
/// Derive `Deserialize` and `Default` with `#[serde(default, deny_unknown_fields,
/// rename_all = "camelCase")]`: an empty settings object (`{}`) then means
/// "the defaults", and a misspelt key is an error that lists the valid ones.
/// Put checks that types cannot express (ranges, formats) in
/// [`Settings::validate`].
pub trait Settings: DeserializeOwned + Default {
    /// Checks the parsed settings. The message is shown to the operator when
    /// the configuration is loaded; name the key and say what is expected.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The settings of a policy that takes none: only `{}` is accepted.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

impl Settings for NoSettings {}

/// Why a settings object was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// Where in the settings object, e.g. `readiness.periodSeconds`; empty for
    /// the whole object.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "invalid settings: {}", self.message)
        } else {
            write!(f, "invalid settings: `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for SettingsError {}

/// Parses and validates settings JSON. An empty string or `null` means `{}`.
pub fn parse<S: Settings>(json: &str) -> Result<S, SettingsError> {
    let json = json.trim();
    let settings = if json.is_empty() || json == "null" {
        S::default()
    } else {
        // Through a `Value` first: errors from its deserializer carry no
        // "line 1 column 57" noise, and the path names the offending key.
        let value: Value = serde_json::from_str(json).map_err(|e| SettingsError {
            path: String::new(),
            message: format!("not valid JSON: {e}"),
        })?;
        serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            SettingsError {
                path: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            }
        })?
    };
    settings.validate().map_err(|message| SettingsError {
        path: String::new(),
        message,
    })?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields, rename_all = "camelCase")]
    struct Example {
        warn_only: bool,
        inner: Inner,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default, deny_unknown_fields, rename_all = "camelCase")]
    struct Inner {
        period_seconds: Option<i32>,
    }

    impl Settings for Example {
        fn validate(&self) -> Result<(), String> {
            match self.inner.period_seconds {
                Some(p) if p < 1 => {
                    Err(format!("`inner.periodSeconds` must be at least 1, not {p}"))
                }
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn empty_means_defaults() {
        for json in ["", "  ", "null", "{}"] {
            let s: Example = parse(json).unwrap();
            assert!(!s.warn_only, "{json:?}");
        }
    }

    #[test]
    fn values_are_read() {
        let s: Example = parse(r#"{"warnOnly": true, "inner": {"periodSeconds": 5}}"#).unwrap();
        assert!(s.warn_only);
        assert_eq!(s.inner.period_seconds, Some(5));
    }

    #[test]
    fn a_misspelt_key_names_the_valid_ones() {
        let e = parse::<Example>(r#"{"warnonly": true}"#).unwrap_err();
        assert_eq!(e.path, "warnonly");
        assert!(e.message.contains("unknown field `warnonly`"), "{e}");
        assert!(e.message.contains("`warnOnly`"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_the_nested_key_without_positions() {
        let e = parse::<Example>(r#"{"inner": {"periodSeconds": "10"}}"#).unwrap_err();
        assert_eq!(e.path, "inner.periodSeconds");
        assert!(!e.to_string().contains("line"), "{e}");
        assert!(e.to_string().contains("invalid type: string \"10\""), "{e}");
    }

    #[test]
    fn validate_runs_after_parsing() {
        let e = parse::<Example>(r#"{"inner": {"periodSeconds": 0}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid settings: `inner.periodSeconds` must be at least 1, not 0"
        );
    }

    #[test]
    fn broken_json_is_reported() {
        let e = parse::<Example>("{warnOnly: true}").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid settings: not valid JSON"),
            "{e}"
        );
    }

    #[test]
    fn no_settings_accepts_only_an_empty_object() {
        assert!(parse::<NoSettings>("{}").is_ok());
        let e = parse::<NoSettings>(r#"{"mode": "x"}"#).unwrap_err();
        assert!(e.message.contains("unknown field `mode`"), "{e}");
    }
}
