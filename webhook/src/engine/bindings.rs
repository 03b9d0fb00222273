//! Host bindings generated from the policy contract, `policies/wit`, and their
//! conversions into the contract's own types (`stsguard-contract`), which the
//! rest of the host works with.

use stsguard_contract as contract;

wasmtime::component::bindgen!({
    world: "policy",
    path: "../policies/wit",
});

use stsguard::policy::types;

impl From<types::Mutation> for contract::Mutation {
    fn from(mutation: types::Mutation) -> Self {
        match mutation {
            types::Mutation::Object(text) => Self::Object(text),
            types::Mutation::Set(fields) => Self::Set(
                fields
                    .into_iter()
                    .map(|types::Field { pointer, value }| contract::Field { pointer, value })
                    .collect(),
            ),
        }
    }
}

impl From<types::Verdict> for contract::Verdict {
    fn from(verdict: types::Verdict) -> Self {
        Self {
            allowed: verdict.allowed,
            message: verdict.message,
            warnings: verdict.warnings,
            mutation: verdict.mutation.map(Into::into),
        }
    }
}

impl From<types::Target> for contract::Target {
    fn from(
        types::Target {
            group,
            version,
            kind,
        }: types::Target,
    ) -> Self {
        Self {
            group,
            version,
            kind,
        }
    }
}

impl From<types::Metadata> for super::Metadata {
    fn from(metadata: types::Metadata) -> Self {
        Self {
            name: metadata.name,
            version: metadata.version,
            description: metadata.description,
            mutating: metadata.mutating,
            targets: metadata.targets.into_iter().map(Into::into).collect(),
            settings_schema: metadata.settings_schema,
        }
    }
}
