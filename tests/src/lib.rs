//! The stsguard end-to-end suite: StatefulSets sent to a real Kubernetes API server
//! (from `KUBECONFIG`), with stsguard on the admission path.
//!
//! Two ways to put stsguard on that path, chosen by `STSGUARD_E2E_MODE` (or detected):
//!
//! ```text
//!  in-cluster      test ──> API server ──> Service ──> stsguard pods   (charts installed, e.g. kind)
//!  out-of-cluster  test ──> API server ──> https://127.0.0.1:PORT ──> `stsguard serve`
//!                           (a MutatingWebhookConfiguration by URL, registered and removed by the test;
//!                            works against any API server that can reach this machine, even one with no nodes)
//! ```
//!
//! Every test is a [`Scenario`]: its own temporary, labelled namespace, cleaned up when
//! the scenario is dropped, also when the test fails. Requests go through
//! [`Submission`]s, and the helpers [`accepts`] and [`rejects`] read like the scenario:
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use stsguard_e2e::{Scenario, accepts, fixtures, rejects};
//! let s = Scenario::start("example").await?;
//! let stored = accepts(s.create(&fixtures::bare_statefulset())).await?;
//! let denial = rejects(s.create(&fixtures::statefulset_without_claims())).await?;
//! # Ok(()) }
//! ```
//!
//! The admission responses' warnings are read from the API server's `Warning` headers
//! ([`admission::parse_warnings`]): kube's typed API drops them.
//!
//! See `tests/README.md` for how to run the suite.

pub mod admission;
pub mod audit;
pub mod capture;
pub mod cleanup;
pub mod cluster;
pub mod control_plane;
pub mod fixtures;
pub mod pods;
pub mod scenario;
pub mod webhook;

pub use admission::{Admitted, Denial, Outcome, Submission, accepts, rejects};
pub use cluster::{Cluster, Mode};
pub use scenario::{Policies, Scenario};

/// Prints why a check is skipped, where `cargo test` cannot capture it, and returns
/// `Ok(())` so the caller can `return skip(..)`.
pub fn skip(test: &str, reason: &str) -> anyhow::Result<()> {
    use std::io::Write;
    // Written to the stderr handle directly: the test harness captures `eprintln!`
    // of passing tests, and a skipped check must never look like a silent pass.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    Ok(())
}
