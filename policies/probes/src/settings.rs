//! The probes policy's settings (`settings:` in the stsguard configuration).

use serde::Deserialize;
use stsguard_policy::Settings;
use stsguard_policy::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::port::PortRef;

/// Settings; every key is optional. See `settings.schema.json` and the README.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbesSettings {
    /// `httpGet` on this path for both probes of the main container.
    pub http_path: Option<String>,
    /// The main container's probe port (name or number), when it declares it.
    pub port: Option<IntOrString>,
    /// The readiness probe: path and timing.
    pub readiness: ProbeSettings,
    /// The liveness probe: path and timing.
    pub liveness: ProbeSettings,
}

/// One probe's settings; an unset timing takes the probe's default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeSettings {
    /// `httpGet` on this path (overrides `httpPath` for this probe).
    pub path: Option<String>,
    pub initial_delay_seconds: Option<i32>,
    pub period_seconds: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub failure_threshold: Option<i32>,
}

/// The timing of a probe, all fields set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay_seconds: i32,
    pub period_seconds: i32,
    pub timeout_seconds: i32,
    pub failure_threshold: i32,
}

/// Readiness reacts within half a minute: a pod that stops answering leaves the
/// Service's endpoints after 3 failures 10 s apart.
pub const READINESS_DEFAULTS: Timing = Timing {
    initial_delay_seconds: 5,
    period_seconds: 10,
    timeout_seconds: 2,
    failure_threshold: 3,
};

/// Liveness is more patient: a restart loses in-flight work, so the container is
/// restarted only after 6 failures 20 s apart (2 minutes), with a longer timeout.
pub const LIVENESS_DEFAULTS: Timing = Timing {
    initial_delay_seconds: 15,
    period_seconds: 20,
    timeout_seconds: 5,
    failure_threshold: 6,
};

/// Seconds of failing before the probe gives up on a container that just started.
const fn patience(t: Timing) -> i32 {
    t.initial_delay_seconds + t.period_seconds * t.failure_threshold
}

// The defaults keep liveness more patient than readiness: a pod is taken out of
// the Service well before it would be restarted.
const _: () = assert!(
    patience(LIVENESS_DEFAULTS) > patience(READINESS_DEFAULTS)
        && LIVENESS_DEFAULTS.timeout_seconds >= READINESS_DEFAULTS.timeout_seconds
);

impl ProbeSettings {
    /// The timing with unset fields taken from `defaults`.
    pub fn timing(&self, defaults: Timing) -> Timing {
        Timing {
            initial_delay_seconds: self
                .initial_delay_seconds
                .unwrap_or(defaults.initial_delay_seconds),
            period_seconds: self.period_seconds.unwrap_or(defaults.period_seconds),
            timeout_seconds: self.timeout_seconds.unwrap_or(defaults.timeout_seconds),
            failure_threshold: self.failure_threshold.unwrap_or(defaults.failure_threshold),
        }
    }

    fn check(&self, probe: &str) -> Result<(), String> {
        if let Some(path) = &self.path {
            check_path(path).map_err(|e| format!("`{probe}.path`: {e}"))?;
        }
        let at_least = |key: &str, value: Option<i32>, min: i32| match value {
            Some(v) if v < min => Err(format!("`{probe}.{key}` must be at least {min}, not {v}")),
            _ => Ok(()),
        };
        at_least("initialDelaySeconds", self.initial_delay_seconds, 0)?;
        at_least("periodSeconds", self.period_seconds, 1)?;
        at_least("timeoutSeconds", self.timeout_seconds, 1)?;
        at_least("failureThreshold", self.failure_threshold, 1)
    }
}

impl Settings for ProbesSettings {
    fn validate(&self) -> Result<(), String> {
        if let Some(path) = &self.http_path {
            check_path(path).map_err(|e| format!("`httpPath`: {e}"))?;
        }
        if let Some(port) = &self.port {
            PortRef::from_int_or_string(port).map_err(|e| format!("`port`: {e}"))?;
        }
        self.readiness.check("readiness")?;
        self.liveness.check("liveness")
    }
}

impl ProbesSettings {
    /// The configured port, already validated.
    pub fn port(&self) -> Option<PortRef> {
        self.port
            .as_ref()
            .and_then(|p| PortRef::from_int_or_string(p).ok())
    }
}

/// An HTTP path for a probe: absolute, without spaces or control characters (the
/// API server accepts anything here, and a bad path only shows when pods fail).
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "path {path:?} must not contain spaces or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use stsguard_policy::serde_json::{self, Value, json};
    use stsguard_policy::testing;

    use super::*;
    use crate::ProbesPolicy;

    fn validate(settings: Value) -> Result<(), String> {
        testing::validate_settings::<ProbesPolicy>(&settings)
    }

    #[test]
    fn no_settings_means_the_defaults() {
        let s: ProbesSettings = Default::default();
        assert_eq!(s.readiness.timing(READINESS_DEFAULTS), READINESS_DEFAULTS);
        assert_eq!(s.liveness.timing(LIVENESS_DEFAULTS), LIVENESS_DEFAULTS);
    }

    #[test]
    fn a_partial_probe_setting_keeps_the_other_defaults() {
        let s: ProbeSettings = serde_json::from_value(json!({"periodSeconds": 30})).unwrap();
        assert_eq!(
            s.timing(LIVENESS_DEFAULTS),
            Timing {
                period_seconds: 30,
                ..LIVENESS_DEFAULTS
            }
        );
    }

    #[test]
    fn good_settings_pass() {
        validate(json!({})).unwrap();
        validate(json!({
            "httpPath": "/healthz", "port": "http",
            "readiness": {"path": "/readyz", "initialDelaySeconds": 0, "periodSeconds": 5, "timeoutSeconds": 1, "failureThreshold": 2},
            "liveness": {"failureThreshold": 10}
        }))
        .unwrap();
        validate(json!({"port": 8080})).unwrap();
    }

    #[test]
    fn bad_settings_name_the_key() {
        for (settings, wanted) in [
            (
                json!({"httpPath": "healthz"}),
                "`httpPath`: path \"healthz\" must start with '/'",
            ),
            (json!({"port": 0}), "`port`: port 0 is out of range 1-65535"),
            (
                json!({"port": "Web Port"}),
                "`port`: \"Web Port\" is neither a port number nor a port name",
            ),
            (
                json!({"readiness": {"periodSeconds": 0}}),
                "`readiness.periodSeconds` must be at least 1, not 0",
            ),
            (
                json!({"liveness": {"initialDelaySeconds": -5}}),
                "`liveness.initialDelaySeconds` must be at least 0, not -5",
            ),
            (
                json!({"liveness": {"path": "/a b"}}),
                "`liveness.path`: path \"/a b\" must not contain spaces",
            ),
            (
                json!({"liveness": {"successThreshold": 2}}),
                "unknown field `successThreshold`",
            ),
            (
                json!({"readiness": {"timeoutSeconds": "1"}}),
                "`readiness.timeoutSeconds`: invalid type: string \"1\"",
            ),
        ] {
            let e = validate(settings.clone()).unwrap_err();
            assert!(e.contains(wanted), "{settings}: {e}");
        }
    }

    #[test]
    fn the_schema_lists_exactly_the_settings() {
        let schema: Value = serde_json::from_str(include_str!("../settings.schema.json")).unwrap();
        // An object with every documented key, each with its documented example, is accepted...
        let example = |properties: &Value| -> Value {
            properties
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v["examples"][0].clone()))
                .collect()
        };
        let mut all = example(&schema["properties"]);
        for probe in ["readiness", "liveness"] {
            all[probe] = example(&schema["$defs"]["probe"]["properties"]);
        }
        validate(all.clone()).unwrap();
        let parsed: ProbesSettings = serde_json::from_value(all).unwrap();
        assert!(
            parsed.http_path.is_some() && parsed.port.is_some() && parsed.liveness.path.is_some()
        );
        assert!(
            parsed.readiness.initial_delay_seconds.is_some()
                && parsed.readiness.period_seconds.is_some()
        );
        assert!(
            parsed.readiness.timeout_seconds.is_some()
                && parsed.readiness.failure_threshold.is_some()
        );
        // ...and the documented defaults are the code's.
        let defaults = |probe: &str, t: Timing| {
            let d = &schema["properties"][probe]["default"];
            assert_eq!(d["initialDelaySeconds"], t.initial_delay_seconds, "{probe}");
            assert_eq!(d["periodSeconds"], t.period_seconds, "{probe}");
            assert_eq!(d["timeoutSeconds"], t.timeout_seconds, "{probe}");
            assert_eq!(d["failureThreshold"], t.failure_threshold, "{probe}");
        };
        defaults("readiness", READINESS_DEFAULTS);
        defaults("liveness", LIVENESS_DEFAULTS);
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["$defs"]["probe"]["additionalProperties"], false);
    }
}
