//! The cross-check table (`cases/mutations.json`): mutations and what the
//! contract makes of them. The host's tests run it through a wasm policy in the
//! real engine, the SDK's tests through its native harness, and this crate's
//! through [`crate::mutation::apply`]; all must agree, so the harness can never
//! accept what the server refuses. Test support, not part of the contract.

use serde::Deserialize;
use serde_json::Value;

use crate::{Field, Mutation};

const TABLE: &str = include_str!("../cases/mutations.json");

/// The AdmissionRequest every case starts from, and the cases.
pub fn table() -> (Value, Vec<Case>) {
    #[derive(Deserialize)]
    struct Table {
        request: Value,
        cases: Vec<Case>,
    }
    let table: Table = serde_json::from_str(TABLE).expect("cases/mutations.json is a valid table");
    (table.request, table.cases)
}

/// One mutation and its expected result.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// Values to set, in order.
    #[serde(default)]
    pub set: Option<Vec<SetValue>>,
    /// A whole object.
    #[serde(default)]
    pub object: Option<Value>,
    expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SetValue {
    pub pointer: String,
    pub value: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum Expect {
    /// The value at each pointer afterwards; `null` for absent.
    Changed(serde_json::Map<String, Value>),
    Unchanged(serde::de::IgnoredAny),
    /// Text the error contains.
    Refused(String),
}

impl Case {
    /// The case as the mutation a policy returns.
    pub fn mutation(&self) -> Mutation {
        match (&self.set, &self.object) {
            (Some(values), None) => Mutation::Set(
                values
                    .iter()
                    .map(|SetValue { pointer, value }| Field {
                        pointer: pointer.clone(),
                        value: value.to_string(),
                    })
                    .collect(),
            ),
            (None, Some(object)) => Mutation::Object(object.to_string()),
            _ => panic!("case `{}`: give `set` or `object`", self.name),
        }
    }

    /// Checks what one side made of the case: the object after it (`None`:
    /// unchanged) or the error message.
    pub fn check(&self, result: Result<Option<Value>, String>) -> Result<(), String> {
        let name = &self.name;
        match (&self.expect, result) {
            (Expect::Refused(text), Err(error)) if error.contains(text.as_str()) => Ok(()),
            (Expect::Refused(text), other) => Err(format!(
                "{name}: expected a refusal containing {text:?}, got {other:?}"
            )),
            (Expect::Unchanged(_), Ok(None)) => Ok(()),
            (Expect::Changed(values), Ok(Some(object))) => {
                for (pointer, expected) in values {
                    let got = object.pointer(pointer).unwrap_or(&Value::Null);
                    if got != expected {
                        return Err(format!("{name}: {pointer} is {got}, expected {expected}"));
                    }
                }
                Ok(())
            }
            (expect, other) => Err(format!("{name}: expected {expect:?}, got {other:?}")),
        }
    }
}
