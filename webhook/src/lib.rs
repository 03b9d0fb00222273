//! stsguard: a Kubernetes mutating admission webhook that makes StatefulSets
//! follow best practice, with its rules written as sandboxed WebAssembly policy
//! components.
//!
//! How a review flows through the crate, each layer using only the ones below:
//!
//! ```text
//!  API server ──HTTPS──► server     transport: axum + rustls; /mutate, /healthz, /readyz, /metrics
//!                          │ bytes, on an evaluation thread
//!                          ▼
//!                       review      wire format: parse ──► ReviewRequest (raw JSON kept whole);
//!                          │                     Response (serializes itself as the AdmissionReview)
//!                          ▼
//!                       admission   the decision: decide(request, policies) ──► Response
//!                          │
//!                          ▼
//!                       chain       load (compile, settings) | evaluate: one step per policy,
//!                          │          on the request's object, in place; the patch from what each step kept
//!                          │          ├─► engine: a fresh wasm instance per evaluation
//!                          │          └─► stsguard_contract: the mutation step, identity rule, texts
//!                          ▼
//!                       ChainOutcome: PolicyRuns ──► warnings, denial, audit annotations, metrics
//! ```
//!
//! [`start`] sits above them all: the one way to start the whole webhook
//! (certificate, engine, first policy load as the first reload, watchers,
//! listener, graceful shutdown); `stsguard serve`, `stsguard bench` and the
//! tests all use it. It uses `reload` (which swaps in changed policies and
//! certificates, and so uses [`server`]'s state), [`tls`] (serves, and can
//! generate, the certificate), [`registry`] (`oci://` modules, pulled when a
//! policy set loads), [`config`] (the YAML configuration) and [`engine`].
//! Beside the path: [`builtin`] holds the embedded built-in policies, `metrics`
//! exposes Prometheus counters, [`audit`] runs the chain on the StatefulSets a
//! cluster already has, and [`cli`] — the top layer — is the `stsguard` command
//! line. No module uses one above it (`tests/layering.rs` checks).
//!
//! The rules a policy's verdict is held to — how a mutation is applied, which
//! fields are the object's identity, every text and limit the user reads — are
//! not here but in `stsguard-contract`, which the policy SDK's test harness
//! uses too.
//!
//! Errors: see docs/design.md, "Errors". Library modules return `thiserror` enums
//! whose message says what to do; only [`cli`] uses `anyhow`.

pub mod admission;
pub mod audit;
pub mod builtin;
pub mod chain;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod engine;
mod errors;
mod evaluators;
mod metrics;
pub mod registry;
mod reload;
pub mod review;
pub mod server;
pub mod signature;
pub mod start;
pub mod tls;

#[doc(hidden)]
pub mod testing;
