//! stsguard: a Kubernetes mutating admission webhook that makes StatefulSets
//! follow best practice, with its rules written as sandboxed WebAssembly policy
//! components.
//!
//! How a review flows through the crate:
//!
//! ```text
//!  API server ──HTTPS──► server   (axum + rustls; /mutate, /healthz, /readyz, /metrics)
//!                          │ bytes
//!                          ▼
//!                       admission::parse_review ──► ReviewRequest (raw JSON kept whole)
//!                          │
//!                          ▼
//!                       admission::decide ──► chain::PolicySet::evaluate
//!                          │                    │ for each policy, in order:
//!                          │                    ├─► engine::Module::evaluate (fresh wasm instance)
//!                          │                    └─► mutation::apply (values or object → checked copy)
//!                          ▼
//!                       Response (allowed / denied, JSONPatch = diff(original, final), warnings)
//! ```
//!
//! Around that path: [`config`] reads the YAML configuration, [`builtin`] holds
//! the embedded built-in policies, [`reload`] swaps in changed policies and
//! certificates without a restart, [`tls`] serves (and can generate) the
//! certificate, [`metrics`] exposes Prometheus counters, and [`cli`] is the
//! `stsguard` command line (`serve`, `eval`, `policies`, `bench`).
//!
//! Errors: library modules return `thiserror` enums that say what to do; only
//! [`cli`], the application layer, uses `anyhow` to add context for the user.

pub mod admission;
pub mod builtin;
pub mod chain;
pub mod cli;
pub mod config;
pub mod engine;
pub mod evaluators;
pub mod metrics;
pub mod mutation;
pub mod reload;
pub mod server;
pub mod tls;

#[doc(hidden)]
pub mod testing;
