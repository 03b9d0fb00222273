//! The policy chain: the configured policies, loaded ([`load`]), and how one
//! request runs through them ([`evaluate`]); what each policy's run came to
//! ([`run`]); the bulkhead and circuit breaker in front of each policy ([`guard`]).
//!
//! ```text
//!   object ─► policy 1 ─► object' ─► policy 2 ─► object'' ─► ... ─► final
//!              │ enforce: denial stops the chain; mutation is passed on
//!              │ monitor: never denies, never mutates; would-be effects → warnings
//!              └ error/timeout: failurePolicy fail → deny, ignore → skip + warning
//!   patch = object → final, compared where policies set values ([`patch`]);
//!           omitted when empty
//! ```
//!
//! A [`PolicySet`] is immutable once loaded; configuration changes build a new
//! one and swap it in whole (see `reload`), so a review always runs against one
//! consistent set. The chain knows nothing of HTTP or of the response format:
//! `admission` turns a [`ChainOutcome`] into the answer.

mod evaluate;
mod guard;
mod load;
mod patch;
mod run;

pub use evaluate::{ChainOutcome, Denial, Selection};
pub use guard::{CircuitState, Refusal};
pub use load::{LoadError, ModuleIdentity, Policy, PolicySet};
pub use run::{PolicyRun, RunResult};

#[cfg(test)]
mod reads_tests;
#[cfg(test)]
mod tests;
