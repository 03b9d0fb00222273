//! The glue between the component exports and a [`Policy`]. Not part of the API:
//! [`export_policy!`](crate::export_policy) calls these functions from the wasm
//! exports and `testing` calls them natively, so unit tests
//! exercise everything but the ABI.

pub use std::string::String;

use stsguard_contract as contract;

use crate::request::{Wire, matches_kind};
use crate::verdict::discard;
use crate::{Policy, Request, settings};

/// The bindings `wit-bindgen` generates for `policies/wit/policy.wit`.
///
/// The only unsafe code in the SDK is in here: lifting and lowering values
/// across the component ABI is unsafe by nature, and `wit-bindgen` writes it.
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
    });
}

/// The `metadata` export.
pub fn metadata<P: Policy>() -> bindings::Metadata {
    use k8s_openapi::Resource;
    let m = P::METADATA;
    bindings::Metadata {
        name: m.name.into(),
        version: m.version.into(),
        description: m.description.into(),
        mutating: m.mutating,
        targets: vec![bindings::Target {
            group: <P::Object as Resource>::GROUP.into(),
            version: <P::Object as Resource>::VERSION.into(),
            kind: <P::Object as Resource>::KIND.into(),
        }],
        settings_schema: m.settings_schema.into(),
        reads: P::READS
            .iter()
            .map(|kind| bindings::stsguard::policy::types::ResourceKind {
                api_version: kind.api_version.into(),
                kind: kind.kind.into(),
            })
            .collect(),
    }
}

/// The `validate-settings` export.
pub fn validate_settings<P: Policy>(settings: &str) -> Result<(), String> {
    settings::parse::<P::Settings>(settings)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The `evaluate` export: `request` without its `object`, which is `object`.
/// The host checks what it returns by the contract's rules (a mutation of a
/// policy that declares `mutating: false`, of the object's identity, at a bad
/// pointer fails the evaluation); `testing` applies the same.
pub fn evaluate<P: Policy>(
    request: &str,
    object: String,
    settings: &str,
) -> Result<contract::Verdict, String> {
    let settings: P::Settings = settings::parse(settings).map_err(|e| e.to_string())?;
    let wire: Wire = serde_json::from_str(request)
        .map_err(|e| format!("cannot read the AdmissionRequest: {e}"))?;
    if !matches_kind::<P::Object>(&wire.kind) || !wire.operation.has_object() {
        return Ok(allow_untouched());
    }
    let Some(request) = Request::<P::Object>::from_wire(wire, object)? else {
        return Ok(allow_untouched());
    };
    let verdict = P::evaluate(&request, &settings).map_err(|e| e.to_string())?;
    discard((request, settings));
    Ok(verdict.into_contract())
}

fn allow_untouched() -> contract::Verdict {
    contract::Verdict {
        allowed: true,
        message: None,
        warnings: Vec::new(),
        mutation: None,
    }
}

impl From<contract::Verdict> for bindings::Verdict {
    fn from(verdict: contract::Verdict) -> Self {
        use bindings::stsguard::policy::types::{Field, Mutation};
        Self {
            allowed: verdict.allowed,
            message: verdict.message,
            warnings: verdict.warnings,
            mutation: verdict.mutation.map(|mutation| match mutation {
                contract::Mutation::Object(text) => Mutation::Object(text),
                contract::Mutation::Set(fields) => Mutation::Set(
                    fields
                        .into_iter()
                        .map(|contract::Field { pointer, value }| Field { pointer, value })
                        .collect(),
                ),
            }),
        }
    }
}
