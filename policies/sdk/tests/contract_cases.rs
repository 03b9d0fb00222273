//! The contract's cross-check table (`policies/contract/cases/mutations.json`)
//! through the SDK: a policy returns each case's mutation with `Verdict::set`, and the native harness must accept and refuse exactly what the
//! table says — which is what the host does with the same table in wasm.

use serde::Deserialize;
use stsguard_contract::cases::{self, Case};
use stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
use stsguard_policy::serde_json::json;
use stsguard_policy::{Error, Metadata, Policy, Request, Settings, Verdict, testing};

/// Returns the mutation of the case its settings name.
struct Echo;

#[derive(Default, Deserialize)]
struct EchoSettings {
    case: String,
}

impl Settings for EchoSettings {}

fn case(name: &str) -> Case {
    cases::table()
        .1
        .into_iter()
        .find(|case| case.name == name)
        .unwrap_or_else(|| panic!("no case {name:?}"))
}

impl Policy for Echo {
    const METADATA: Metadata = Metadata {
        name: "echo",
        version: "0.0.0",
        description: "returns the mutation of a contract case",
        mutating: true,
        settings_schema: "{}",
    };
    type Object = StatefulSet;
    type Settings = EchoSettings;

    fn evaluate(_: &Request<StatefulSet>, settings: &EchoSettings) -> Result<Verdict, Error> {
        let case = case(&settings.case);
        // The SDK's one way to write; a whole object is the value at "".
        if let Some(object) = case.object {
            return Verdict::accept().set("", object);
        }
        let mut verdict = Verdict::accept();
        for value in case.set.unwrap_or_default() {
            verdict = verdict.set(value.pointer, value.value)?;
        }
        Ok(verdict)
    }
}

#[test]
fn the_native_harness_refuses_exactly_what_the_contract_table_says() {
    let (request, cases) = cases::table();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let result = testing::evaluate::<Echo>(&request, &json!({"case": case.name}))
                .map(|outcome| outcome.mutated_object);
            case.check(result).err()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
