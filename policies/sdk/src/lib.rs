//! The SDK for writing stsguard admission policies in Rust.
//!
//! A policy is a WebAssembly component that exports the `stsguard:policy` world
//! (`policies/wit/policy.wit`). This crate hides the component glue: a policy
//! author implements [`Policy`] — one function that takes the request and
//! settings and returns a [`Verdict`] — and names the type in [`export_policy!`].
//!
//! ```text
//!   host (wasmtime)                      this crate                     your policy
//!   ───────────────                      ──────────                     ───────────
//!   evaluate(request, object,   ──► parse settings (S::validate)
//!            settings)                  read the request, keep `object` as
//!                                       text; skip other kinds, DELETE, CONNECT
//!                                       object_view::<V>() on demand ─► Policy::evaluate
//!                                                                         │
//!   verdict { allowed, message,  ◄── the values to set,           ◄── Verdict::accept /
//!     warnings, mutation }           as JSON text                     reject / set + warn
//! ```
//!
//! **One way to read, one way to write.** A policy reads the object with
//! [`Request::object_view`] into any serde type (a small view of the fields it
//! needs, or the whole typed k8s-openapi object) and changes it with
//! [`Verdict::set`], a value at a JSON pointer. The host applies those values to
//! its own copy of the object and computes the patch, so **no field is lost**:
//! fields newer than k8s-openapi, `creationTimestamp: null`, anything a Rust
//! type would drop on a round trip stays as the API server sent it. The
//! built-in policies use exactly this, so it is also the fast way.
//!
//! The same crate compiles natively, so a policy's unit tests run with plain
//! `cargo test` through [`testing`], against fixture AdmissionRequests, with no
//! WebAssembly involved — and with the host's own rules (`stsguard-contract`):
//! what the server would refuse, the harness refuses.
//!
//! ```
//! use stsguard_policy::k8s_openapi::api::apps::v1::StatefulSet;
//! use stsguard_policy::{Error, Metadata, NoSettings, Operation, Policy, Request, Verdict};
//!
//! /// The fields the policy reads.
//! #[derive(serde::Deserialize)]
//! struct View {
//!     spec: Option<Spec>,
//! }
//!
//! #[derive(serde::Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct Spec {
//!     min_ready_seconds: Option<i32>,
//! }
//!
//! pub struct MinReadySeconds;
//!
//! impl Policy for MinReadySeconds {
//!     const METADATA: Metadata = Metadata {
//!         name: "min-ready-seconds",
//!         version: "0.1.0",
//!         description: "Gives new StatefulSets spec.minReadySeconds: 10.",
//!         mutating: true,
//!         settings_schema: "{}",
//!     };
//!     type Object = StatefulSet;
//!     type Settings = NoSettings;
//!
//!     fn evaluate(request: &Request<StatefulSet>, _: &NoSettings) -> Result<Verdict, Error> {
//!         let view: View = request.object_view()?;
//!         let set = view.spec.and_then(|spec| spec.min_ready_seconds).is_some();
//!         if request.operation() != Operation::Create || set {
//!             return Ok(Verdict::accept());
//!         }
//!         Ok(Verdict::accept()
//!             .set("/spec/minReadySeconds", 10)?
//!             .warn("set spec.minReadySeconds to 10"))
//!     }
//! }
//!
//! stsguard_policy::export_policy!(MinReadySeconds);
//! ```

pub mod cluster;
pub mod json;
pub mod log;
mod request;
#[doc(hidden)]
pub mod runtime;
mod settings;
pub mod testing;
mod verdict;

use std::fmt;

pub use request::{Operation, Request};
pub use settings::{NoSettings, Settings, SettingsError};
pub use verdict::{Action, MAX_WARNING_CHARS, Verdict};

/// Re-exported so that a policy uses the exact k8s-openapi version (and API
/// version feature) the SDK was built with.
pub use k8s_openapi;
/// Re-exported for policies that read or edit raw JSON.
pub use serde_json;

/// An admission policy. Implement it on a unit struct and export it with
/// [`export_policy!`].
pub trait Policy {
    /// What the policy says about itself; returned by the component's `metadata`
    /// export. The targets are derived from [`Policy::Object`].
    const METADATA: Metadata;

    /// The kind of object the policy evaluates, e.g.
    /// `k8s_openapi::api::apps::v1::StatefulSet`. Requests for any other kind are
    /// allowed untouched without calling [`Policy::evaluate`]; an object a
    /// [`Request::object_view`] cannot read is checked against this type.
    type Object: k8s_openapi::Resource + serde::de::DeserializeOwned + serde::Serialize;

    /// The policy's settings; [`NoSettings`] when it takes none.
    type Settings: Settings;

    /// The kinds of cluster objects the policy reads with [`cluster`], e.g.
    /// `&[cluster::Kind::of::<Service>()]`; exported in its metadata (`reads`).
    /// The host loads the policy only when the operator grants each of them,
    /// and refuses a read of any other kind. None by default.
    const READS: &'static [cluster::Kind] = &[];

    /// Decides about one CREATE or UPDATE of a [`Policy::Object`]. DELETE and
    /// CONNECT never reach it. Return `Err` only when the policy cannot decide
    /// (the host then applies the configured `failurePolicy`); a rule the object
    /// breaks is a [`Verdict::reject`].
    fn evaluate(
        request: &Request<Self::Object>,
        settings: &Self::Settings,
    ) -> Result<Verdict, Error>;
}

/// What a policy says about itself. See `record metadata` in the WIT contract.
#[derive(Debug, Clone, Copy)]
pub struct Metadata {
    /// Short identifier, kebab-case, e.g. `volume-claims`.
    pub name: &'static str,
    /// The policy's own version, semver; `env!("CARGO_PKG_VERSION")` usually.
    pub version: &'static str,
    /// One or two sentences: what the policy enforces and why.
    pub description: &'static str,
    /// Whether the policy may return a mutation.
    pub mutating: bool,
    /// JSON Schema (draft 2020-12) of the settings object, as JSON text; `{}`
    /// when the policy takes no settings. `include_str!` a schema file.
    pub settings_schema: &'static str,
}

/// The policy could not decide: a bug, or an object it cannot read. Reported
/// to the host as the `error` case of `evaluate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

/// A cluster read with no answer fails the evaluation: the configured
/// `failurePolicy` decides.
impl From<cluster::ReadError> for Error {
    fn from(error: cluster::ReadError) -> Self {
        Self(error.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Self(error.to_string())
    }
}

/// Exports a [`Policy`] as the component's `stsguard:policy/policy` world.
///
/// Use it once, at the top level of the policy crate's `lib.rs`. It expands to
/// the component-ABI exports only when compiling for WebAssembly, so a native
/// build (unit tests, or several policies linked into one test binary) carries
/// no exported symbols.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct StsguardPolicyExport;

            impl $crate::runtime::bindings::Guest for StsguardPolicyExport {
                fn metadata() -> $crate::runtime::bindings::Metadata {
                    $crate::runtime::metadata::<$policy>()
                }

                fn validate_settings(
                    settings: $crate::runtime::String,
                ) -> ::core::result::Result<(), $crate::runtime::String> {
                    $crate::runtime::validate_settings::<$policy>(&settings)
                }

                fn evaluate(
                    request: $crate::runtime::String,
                    object: $crate::runtime::String,
                    settings: $crate::runtime::String,
                ) -> ::core::result::Result<
                    $crate::runtime::bindings::Verdict,
                    $crate::runtime::String,
                > {
                    $crate::runtime::evaluate::<$policy>(&request, object, &settings)
                        .map(::core::convert::Into::into)
                }
            }

            $crate::runtime::bindings::__export_policy_world!(
                StsguardPolicyExport with_types_in $crate::runtime::bindings
            );
        };
    };
}
