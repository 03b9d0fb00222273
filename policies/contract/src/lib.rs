//! The contract between the stsguard host and the policies it runs, beyond what
//! the WIT world (`policies/wit/policy.wit`) can say: the rules both sides must
//! apply the same way.
//!
//! ```text
//!   policy ──WIT verdict──► host (webhook)           SDK testing harness (native)
//!                             │                         │
//!                             └──── stsguard-contract ──┘
//!                                   kind      operations, group/version/kind, targets
//!                                   mutation  THE step that applies a verdict's mutation
//!                                             (pointers or whole object, identity rule,
//!                                             all or nothing)
//!                                   text      how an object is named, denial and warning
//!                                             texts, and every limit on them
//!                                   cluster   reading cluster objects: kinds, label
//!                                             selectors, the objects of a kind as
//!                                             reads see them, what a read may not do
//! ```
//!
//! The host enforces these rules; the SDK's harness runs the same code, so a
//! policy that passes its own tests cannot be refused by the server for a reason
//! the tests did not show (a policy that renamed its object once passed
//! `testing::evaluate` and failed in the server). Nothing here depends on
//! WebAssembly: each side converts its generated bindings into these types with
//! `From`.

pub mod cluster;
pub mod kind;
pub mod mutation;
pub mod request;
pub mod text;
pub mod verdict;

#[doc(hidden)]
pub mod cases;

pub use kind::{GroupVersionKind, Operation, Target};
pub use mutation::{Field, Mutation, MutationError};
pub use verdict::{Verdict, VerdictError};

/// The WIT package this contract belongs to, as components name it.
pub const WIT_PACKAGE: &str = "stsguard:policy@0.3.0";

/// The earlier contract versions the host still serves, exactly as before.
pub const WIT_PACKAGES_SERVED: &[&str] = &["stsguard:policy@0.2.0", WIT_PACKAGE];
