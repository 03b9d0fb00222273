//! A policy for the host's own tests, written against the raw WIT bindings of
//! the 0.2.0 contract (frozen in `webhook/wit/0.2.0`): every host test that runs
//! it also shows that components built before 0.3.0 load and behave as they did.
//!
//! The host must survive policies that misbehave — that loop forever, trap, or
//! allocate without bound — and must run well-behaved ones in the right order. One
//! component covers all of these: its settings say what to do, so a test builds a
//! chain of differently configured instances of it instead of one crate per case.
//!
//! Settings: `{"behaviour": "<name>", ...}` with these behaviours:
//!
//! | behaviour | what `evaluate` does |
//! |---|---|
//! | `allow` | allows, no change |
//! | `deny` | denies with `settings.message` |
//! | `warn` | allows with the warning `settings.message` |
//! | `label` | sets `metadata.labels[settings.key] = settings.value`, with a warning, returning the whole object |
//! | `set` | returns `settings.fields` (`[{"pointer": .., "value": <JSON>}]`, or `"raw": <text>` instead of `value`) as a `set` mutation |
//! | `object` | returns `settings.object` as the whole mutated object |
//! | `require-label` | denies unless `metadata.labels[settings.key] == settings.value` |
//! | `error` | returns the error `settings.message` |
//! | `loop` | never returns |
//! | `trap` | panics (a wasm trap) |
//! | `memory-bomb` | allocates until the memory limit stops it |
//! | `print` | writes `settings.message` to stdout and stderr, logs it, allows |
//! | `wrong-json` | returns a mutated object that is not JSON |
//!
//! `validate-settings` rejects any other behaviour, so the host's refusal to load
//! a policy with invalid settings is testable too.

#![allow(unsafe_code)] // the generated bindings are unsafe glue; this crate adds none

wit_bindgen::generate!({
    world: "policy",
    path: "../../../webhook/wit/0.2.0",
});

use serde_json::Value;
use stsguard::policy::host::log;

struct Scripted;

const BEHAVIOURS: &[&str] = &[
    "allow",
    "deny",
    "warn",
    "label",
    "set",
    "object",
    "require-label",
    "error",
    "loop",
    "trap",
    "memory-bomb",
    "print",
    "log-flood",
    "wrong-json",
];

fn text(settings: &Value, key: &str) -> String {
    settings[key].as_str().unwrap_or_default().to_string()
}

fn allow(warnings: Vec<String>, mutation: Option<Mutation>) -> Verdict {
    Verdict {
        allowed: true,
        message: None,
        warnings,
        mutation,
    }
}

/// The `set` behaviour's fields: each value as JSON text, or `raw` verbatim.
fn fields(settings: &Value) -> Vec<Field> {
    let fields = settings["fields"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    fields
        .iter()
        .map(|field| Field {
            pointer: text(field, "pointer"),
            value: match field.get("raw") {
                Some(raw) => raw.as_str().unwrap_or_default().to_string(),
                None => field["value"].to_string(),
            },
        })
        .collect()
}

impl Guest for Scripted {
    fn metadata() -> Metadata {
        Metadata {
            name: "scripted".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Test-only policy whose behaviour is chosen by its settings.".into(),
            mutating: true,
            targets: vec![Target {
                group: "apps".into(),
                version: "v1".into(),
                kind: "StatefulSet".into(),
            }],
            settings_schema: r#"{"type":"object","required":["behaviour"]}"#.into(),
        }
    }

    fn validate_settings(settings: String) -> Result<(), String> {
        let settings: Value =
            serde_json::from_str(&settings).map_err(|e| format!("settings are not JSON: {e}"))?;
        let behaviour = settings["behaviour"].as_str().unwrap_or_default();
        if BEHAVIOURS.contains(&behaviour) {
            Ok(())
        } else {
            Err(format!(
                "unknown behaviour `{behaviour}`; use one of: {}",
                BEHAVIOURS.join(", ")
            ))
        }
    }

    fn evaluate(request: String, object: String, settings: String) -> Result<Verdict, String> {
        let settings: Value = serde_json::from_str(&settings).map_err(|e| e.to_string())?;
        let mut request: Value = serde_json::from_str(&request).map_err(|e| e.to_string())?;
        request["object"] = serde_json::from_str(&object).map_err(|e| e.to_string())?;
        let message = text(&settings, "message");
        match settings["behaviour"].as_str().unwrap_or_default() {
            "allow" => Ok(allow(vec![], None)),
            "deny" => Ok(Verdict {
                allowed: false,
                message: Some(message),
                warnings: vec![],
                mutation: None,
            }),
            "warn" => Ok(allow(vec![message], None)),
            "label" => {
                let (key, value) = (text(&settings, "key"), text(&settings, "value"));
                let object = &mut request["object"];
                let metadata = object
                    .as_object_mut()
                    .ok_or("object is not a JSON object")?
                    .entry("metadata")
                    .or_insert_with(|| Value::Object(Default::default()));
                let labels = metadata
                    .as_object_mut()
                    .ok_or("metadata is not a JSON object")?
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Default::default()));
                if labels[&key] == Value::String(value.clone()) {
                    return Ok(allow(vec![], None));
                }
                labels[&key] = Value::String(value.clone());
                Ok(allow(
                    vec![format!("set label {key}={value}")],
                    Some(Mutation::Object(object.to_string())),
                ))
            }
            "set" => {
                let fields = fields(&settings);
                let warnings = fields
                    .iter()
                    .map(|f| format!("set {}", f.pointer))
                    .collect();
                Ok(allow(warnings, Some(Mutation::Set(fields))))
            }
            "object" => Ok(allow(
                vec![],
                Some(Mutation::Object(settings["object"].to_string())),
            )),
            "require-label" => {
                let (key, value) = (text(&settings, "key"), text(&settings, "value"));
                if request["object"]["metadata"]["labels"][&key] == Value::String(value.clone()) {
                    Ok(allow(vec![], None))
                } else {
                    Ok(Verdict {
                        allowed: false,
                        message: Some(format!("label {key}={value} is missing")),
                        warnings: vec![],
                        mutation: None,
                    })
                }
            }
            "error" => Err(message),
            "loop" => {
                let mut counter: u64 = 0;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            "trap" => panic!("scripted trap: {message}"),
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "print" => {
                println!("{message}");
                eprintln!("{message}");
                log(Level::Info, &message);
                Ok(allow(vec![], None))
            }
            "log-flood" => loop {
                log(Level::Info, &message);
            },
            "wrong-json" => Ok(allow(vec![], Some(Mutation::Object("{not json".into())))),
            other => Err(format!("unknown behaviour `{other}`")),
        }
    }
}

export!(Scripted);
