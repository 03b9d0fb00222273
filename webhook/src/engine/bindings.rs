//! Host bindings generated from the policy contract, one set per contract
//! version the host serves, and their conversions into the contract's own types
//! (`stsguard-contract`), which the rest of the host works with.
//!
//! - [`v0_3`]: today's contract, `policies/wit` (policies may read the cluster);
//! - [`v0_2`]: the contract as it was at 0.2.0, frozen in `webhook/wit/0.2.0`:
//!   components built against it keep loading and behave exactly as before.
//!
//! Both sets are linked into one linker (their interfaces are distinct
//! versions); [`Pre::new`] finds which world a component exports.

use stsguard_contract as contract;
use wasmtime::Store;

use super::Metadata;
use super::sandbox::Sandbox;

/// Today's contract.
pub mod v0_3 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../policies/wit",
    });
}

/// The 0.2.0 contract, frozen.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "wit/0.2.0",
    });
}

/// The conversions from one version's generated types into the contract's: the
/// types a verdict is made of are the same in every served version.
macro_rules! verdict_conversions {
    ($version:ident) => {
        impl From<$version::stsguard::policy::types::Mutation> for contract::Mutation {
            fn from(mutation: $version::stsguard::policy::types::Mutation) -> Self {
                use $version::stsguard::policy::types::{Field, Mutation};
                match mutation {
                    Mutation::Object(text) => Self::Object(text),
                    Mutation::Set(fields) => Self::Set(
                        fields
                            .into_iter()
                            .map(|Field { pointer, value }| contract::Field { pointer, value })
                            .collect(),
                    ),
                }
            }
        }

        impl From<$version::stsguard::policy::types::Verdict> for contract::Verdict {
            fn from(verdict: $version::stsguard::policy::types::Verdict) -> Self {
                Self {
                    allowed: verdict.allowed,
                    message: verdict.message,
                    warnings: verdict.warnings,
                    mutation: verdict.mutation.map(Into::into),
                }
            }
        }

        impl From<$version::stsguard::policy::types::Target> for contract::Target {
            fn from(target: $version::stsguard::policy::types::Target) -> Self {
                Self {
                    group: target.group,
                    version: target.version,
                    kind: target.kind,
                }
            }
        }
    };
}

verdict_conversions!(v0_2);
verdict_conversions!(v0_3);

impl From<v0_3::stsguard::policy::types::Metadata> for Metadata {
    fn from(metadata: v0_3::stsguard::policy::types::Metadata) -> Self {
        Self {
            name: metadata.name,
            version: metadata.version,
            description: metadata.description,
            mutating: metadata.mutating,
            targets: metadata.targets.into_iter().map(Into::into).collect(),
            settings_schema: metadata.settings_schema,
            reads: metadata
                .reads
                .into_iter()
                .map(|kind| contract::cluster::ResourceKind {
                    api_version: kind.api_version,
                    kind: kind.kind,
                })
                .collect(),
        }
    }
}

impl From<v0_2::stsguard::policy::types::Metadata> for Metadata {
    fn from(metadata: v0_2::stsguard::policy::types::Metadata) -> Self {
        Self {
            name: metadata.name,
            version: metadata.version,
            description: metadata.description,
            mutating: metadata.mutating,
            targets: metadata.targets.into_iter().map(Into::into).collect(),
            settings_schema: metadata.settings_schema,
            // 0.2 has no cluster reads.
            reads: Vec::new(),
        }
    }
}

/// Adds every served version's host interfaces to the linker.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<Sandbox>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    v0_2::Policy::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |s| s)?;
    v0_3::Policy::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |s| s)?;
    Ok(())
}

/// A component linked and ready to instantiate, in the version it was built for.
pub enum Pre {
    V0_2(v0_2::PolicyPre<Sandbox>),
    V0_3(v0_3::PolicyPre<Sandbox>),
}

impl Pre {
    /// Finds which served world the component exports: `version` when its
    /// imports name one (`stsguard:policy/host@0.3.0`), else each in turn,
    /// today's first. The error is today's: what the component lacks for it.
    pub fn new(
        pre: wasmtime::component::InstancePre<Sandbox>,
        version: Option<&str>,
    ) -> wasmtime::Result<Self> {
        if version.is_some_and(|v| v.starts_with("0.2.")) {
            return v0_2::PolicyPre::new(pre).map(Self::V0_2);
        }
        match v0_3::PolicyPre::new(pre.clone()) {
            Ok(pre) => Ok(Self::V0_3(pre)),
            Err(error) if version.is_none() => {
                v0_2::PolicyPre::new(pre).map(Self::V0_2).map_err(|_| error)
            }
            Err(error) => Err(error),
        }
    }

    pub fn instantiate(&self, store: &mut Store<Sandbox>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Self::V0_2(pre) => Instance::V0_2(pre.instantiate(store)?),
            Self::V0_3(pre) => Instance::V0_3(pre.instantiate(store)?),
        })
    }

    /// The contract version of the world: `0.3.0`.
    pub fn version(&self) -> &'static str {
        match self {
            Self::V0_2(_) => "0.2.0",
            Self::V0_3(_) => "0.3.0",
        }
    }
}

/// An instance of a policy component, in its version.
pub enum Instance {
    V0_2(v0_2::Policy),
    V0_3(v0_3::Policy),
}

impl Instance {
    pub fn metadata(&self, store: &mut Store<Sandbox>) -> wasmtime::Result<Metadata> {
        Ok(match self {
            Self::V0_2(policy) => policy.call_metadata(store)?.into(),
            Self::V0_3(policy) => policy.call_metadata(store)?.into(),
        })
    }

    pub fn validate_settings(
        &self,
        store: &mut Store<Sandbox>,
        settings: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Self::V0_2(policy) => policy.call_validate_settings(store, settings),
            Self::V0_3(policy) => policy.call_validate_settings(store, settings),
        }
    }

    pub fn evaluate(
        &self,
        store: &mut Store<Sandbox>,
        request: &str,
        object: &str,
        settings: &str,
    ) -> wasmtime::Result<Result<contract::Verdict, String>> {
        Ok(match self {
            Self::V0_2(policy) => policy
                .call_evaluate(store, request, object, settings)?
                .map(Into::into),
            Self::V0_3(policy) => policy
                .call_evaluate(store, request, object, settings)?
                .map(Into::into),
        })
    }
}
