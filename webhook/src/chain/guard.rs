//! Isolation of a misbehaving policy: a bulkhead and a circuit breaker in front
//! of each policy's evaluations.
//!
//! A policy that loops until its deadline holds an evaluation thread for the
//! whole deadline, and every review queues behind it (measured: a healthy route
//! fell from 3,540 to 341 reviews/s while four clients called a looping policy).
//! The **circuit** stops that: after `circuit.failures` timeouts or traps in a
//! row the policy is not run at all for `circuit.cooldown` — its failurePolicy
//! decides at once, no thread is held — then one evaluation at a time tests it
//! (half-open): a success closes the circuit, a failure opens it again. The
//! **bulkhead** (`maxConcurrent`) caps how many evaluations of one policy run at
//! once, for a policy known to be slow; it is off by default because the chain
//! runs every policy on the same threads in turn, so under load all of them can
//! be in one healthy policy at once, and a cap below the thread count would fail
//! healthy reviews.
//!
//! The guard also keeps the policy's **record** for the server's scheduling
//! ([`crate::evaluators`]): a policy is *trusted* once one of its evaluations
//! finished cleanly within [`SLOW`], and stays so until it times out, traps,
//! hits its memory limit or runs longer than [`SLOW`]; then it is *suspect* for
//! at least [`SUSPECT_FOR`] (and while its circuit is not closed). Reviews whose
//! policies are all trusted run on the async worker that read them when the
//! server is idle, else on the trusted evaluation threads; the others on the
//! suspect threads, so a looping policy holds those, never the workers or the
//! threads that serve healthy reviews.
//!
//! Only timeouts, traps and memory-limit failures count: they are the policy
//! misbehaving. An error the policy returns ("cannot decide") or the server-wide
//! memory budget being full does not open the circuit. The state lives with the
//! loaded policy, so a reload starts every circuit closed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::CircuitConfig;
use crate::engine::EvalError;

/// An evaluation that takes longer than this makes its policy suspect: an async
/// worker must not be held that long, since the other connections it serves
/// wait behind it. The built-ins take 30-60 µs, an interpreted policy a few
/// milliseconds; the margin is for the wall clock, which counts the time a
/// thread waits for a core (at saturation on 2 cores, 10 ms marked the
/// built-ins suspect now and then).
pub const SLOW: Duration = Duration::from_millis(50);

/// How long a policy stays suspect after it misbehaved or ran slow, at least;
/// longer while its circuit is open or half-open.
pub const SUSPECT_FOR: Duration = Duration::from_secs(300);

/// The bulkhead, circuit and record of one loaded policy.
#[derive(Debug)]
pub(super) struct Guard {
    max_concurrent: Option<usize>,
    in_flight: AtomicUsize,
    circuit: Mutex<Circuit>,
    record: Record,
}

/// Whether the policy has earned running beside the healthy reviews: two
/// atomics, no lock of its own (every review asks it).
#[derive(Debug)]
struct Record {
    /// The clock's origin for `suspect_until`.
    origin: Instant,
    /// One evaluation finished cleanly within [`SLOW`].
    proven: AtomicBool,
    /// Nanoseconds after `origin` until which the policy is suspect (0: never was).
    suspect_until: AtomicU64,
}

impl Record {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            proven: AtomicBool::new(false),
            suspect_until: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn trusted(&self, now: Instant) -> bool {
        self.proven.load(Ordering::Relaxed)
            && self.nanos(now) >= self.suspect_until.load(Ordering::Relaxed)
    }

    /// Records one evaluation; true when it made a trusted policy suspect.
    fn record(&self, clean: bool, now: Instant) -> bool {
        if clean {
            if !self.proven.load(Ordering::Relaxed) {
                self.proven.store(true, Ordering::Relaxed);
            }
            return false;
        }
        let was_trusted = self.trusted(now);
        let until = self.nanos(now + SUSPECT_FOR);
        self.suspect_until.fetch_max(until, Ordering::Relaxed);
        was_trusted
    }
}

/// Why an evaluation was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `maxConcurrent` evaluations are already running.
    Busy { limit: usize },
    /// The circuit is open; it lets an evaluation through again after `retry_in`.
    Open { failures: u32, retry_in: Duration },
}

impl Refusal {
    /// A short label, as [`EvalError::reason`] gives for failures.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Busy { .. } => "bulkhead_full",
            Self::Open { .. } => "circuit_open",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Busy { limit } => write!(
                f,
                "{limit} evaluations of it were already running (maxConcurrent)"
            ),
            Self::Open { failures, retry_in } => write!(
                f,
                "its circuit is open after {failures} timeouts or traps in a row; tested again in {}",
                humantime::format_duration(Duration::from_secs(retry_in.as_secs()))
            ),
        }
    }
}

/// The circuit's state, for metrics: closed 0, half-open 1, open 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

/// Leave to run one evaluation; report how it went with [`Permit::finish`].
#[derive(Debug)]
pub(super) struct Permit<'a> {
    guard: &'a Guard,
    probe: bool,
    admitted: Instant,
}

impl Guard {
    pub(super) fn new(max_concurrent: Option<usize>, circuit: CircuitConfig) -> Self {
        Self {
            max_concurrent,
            in_flight: AtomicUsize::new(0),
            circuit: Mutex::new(Circuit::new(circuit)),
            record: Record::new(Instant::now()),
        }
    }

    /// Whether an evaluation may run now.
    pub(super) fn admit(&self, policy: &str, now: Instant) -> Result<Permit<'_>, Refusal> {
        let probe = self.circuit().admit(policy, now)?;
        let running = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = Permit {
            guard: self,
            probe,
            admitted: now,
        };
        if let Some(limit) = self.max_concurrent
            && running >= limit
        {
            drop(permit); // gives back the slot, and a half-open test its turn
            return Err(Refusal::Busy { limit });
        }
        Ok(permit)
    }

    pub(super) fn state(&self, now: Instant) -> CircuitState {
        self.circuit().state(now)
    }

    /// Whether its evaluations may run on an async worker now: it has finished
    /// one cleanly, has not misbehaved or run slow for [`SUSPECT_FOR`], and its
    /// circuit is closed.
    pub(super) fn trusted(&self, now: Instant) -> bool {
        self.record.trusted(now) && self.state(now) == CircuitState::Closed
    }

    fn circuit(&self) -> std::sync::MutexGuard<'_, Circuit> {
        self.circuit.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Permit<'_> {
    /// Records how the evaluation went: a misbehaving failure counts towards
    /// opening the circuit, anything else resets the count.
    pub(super) fn finish(mut self, policy: &str, result: Result<(), &EvalError>, now: Instant) {
        let misbehaved = matches!(
            result,
            Err(EvalError::Timeout(_) | EvalError::Trap(_) | EvalError::MemoryLimit(_))
        );
        self.guard
            .circuit()
            .record(policy, misbehaved, self.probe, now);
        let took = now.saturating_duration_since(self.admitted);
        if self.guard.record.record(!misbehaved && took <= SLOW, now) {
            tracing::warn!(
                policy,
                took_ms = took.as_millis() as u64,
                suspect_for = %humantime::format_duration(SUSPECT_FOR),
                "policy suspect: it misbehaved or ran slow, so its reviews run on the \
                 suspect evaluation threads, apart from the healthy ones"
            );
        }
        self.probe = false;
    }
}

impl Drop for Permit<'_> {
    /// A permit dropped unfinished (the evaluation panicked) gives its slot back,
    /// and a half-open test its turn, so the policy is not skipped for ever.
    fn drop(&mut self) {
        if self.probe {
            self.guard.circuit().abandon_probe();
        }
        self.guard.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The circuit breaker's state machine, with the time passed in (tests use a
/// clock of their own).
#[derive(Debug)]
struct Circuit {
    config: CircuitConfig,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        failures: u32,
    },
    /// One test evaluation at a time.
    HalfOpen {
        probing: bool,
        failures: u32,
    },
}

impl Circuit {
    fn new(config: CircuitConfig) -> Self {
        Self {
            config,
            state: State::Closed { failures: 0 },
        }
    }

    fn state(&self, now: Instant) -> CircuitState {
        match self.state {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until, .. } if now < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// `Ok(true)`: run it as the half-open test evaluation.
    fn admit(&mut self, policy: &str, now: Instant) -> Result<bool, Refusal> {
        match self.state {
            State::Closed { .. } => Ok(false),
            State::Open { until, failures } if now < until => Err(Refusal::Open {
                failures,
                retry_in: until - now,
            }),
            State::Open { failures, .. }
            | State::HalfOpen {
                probing: false,
                failures,
            } => {
                if matches!(self.state, State::Open { .. }) {
                    tracing::info!(
                        policy,
                        "circuit half-open: letting one evaluation test the policy"
                    );
                }
                self.state = State::HalfOpen {
                    probing: true,
                    failures,
                };
                Ok(true)
            }
            State::HalfOpen {
                probing: true,
                failures,
            } => Err(Refusal::Open {
                failures,
                retry_in: Duration::ZERO,
            }),
        }
    }

    fn abandon_probe(&mut self) {
        if let State::HalfOpen { failures, .. } = self.state {
            self.state = State::HalfOpen {
                probing: false,
                failures,
            };
        }
    }

    fn record(&mut self, policy: &str, misbehaved: bool, probe: bool, now: Instant) {
        let threshold = self.config.failures;
        self.state = match (self.state, misbehaved) {
            (State::HalfOpen { failures, .. }, true) if probe => {
                tracing::warn!(
                    policy,
                    failures,
                    "circuit open again: the test evaluation failed too"
                );
                State::Open {
                    until: now + self.config.cooldown,
                    failures: failures + 1,
                }
            }
            (State::HalfOpen { .. }, false) if probe => {
                tracing::info!(policy, "circuit closed: the test evaluation succeeded");
                State::Closed { failures: 0 }
            }
            (State::Closed { failures }, true) if threshold > 0 && failures + 1 >= threshold => {
                tracing::warn!(
                    policy,
                    failures = failures + 1,
                    cooldown = %humantime::format_duration(self.config.cooldown),
                    "circuit open: the policy timed out or trapped too often in a row; it is \
                     not run (its failurePolicy decides) until the cooldown ends"
                );
                State::Open {
                    until: now + self.config.cooldown,
                    failures: failures + 1,
                }
            }
            (State::Closed { failures }, true) => State::Closed {
                failures: failures + 1,
            },
            (State::Closed { .. }, false) => State::Closed { failures: 0 },
            // An evaluation admitted before the circuit opened finished late:
            // the open state stands.
            (state, _) => state,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(failures: u32) -> CircuitConfig {
        CircuitConfig {
            failures,
            cooldown: Duration::from_secs(30),
        }
    }

    const TIMEOUT: EvalError = EvalError::Timeout(Duration::from_millis(300));

    #[test]
    fn the_circuit_opens_after_consecutive_misbehaviour_and_tests_after_the_cooldown() {
        let guard = Guard::new(None, config(3));
        let start = Instant::now();
        let fail = |at: Duration| {
            guard
                .admit("p", start + at)
                .unwrap()
                .finish("p", Err(&TIMEOUT), start + at)
        };
        fail(Duration::ZERO);
        fail(Duration::ZERO);
        // A success in between resets the count.
        guard.admit("p", start).unwrap().finish("p", Ok(()), start);
        fail(Duration::ZERO);
        fail(Duration::ZERO);
        assert_eq!(guard.state(start), CircuitState::Closed);
        fail(Duration::ZERO);
        assert_eq!(guard.state(start), CircuitState::Open);
        let refused = guard
            .admit("p", start + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(
            refused,
            Refusal::Open {
                failures: 3,
                retry_in: Duration::from_secs(20)
            }
        );

        // After the cooldown one test evaluation runs; a second waits for it.
        let later = start + Duration::from_secs(31);
        assert_eq!(guard.state(later), CircuitState::HalfOpen);
        let probe = guard.admit("p", later).unwrap();
        assert!(matches!(guard.admit("p", later), Err(Refusal::Open { .. })));
        probe.finish("p", Err(&EvalError::Trap("unreachable".into())), later);
        assert_eq!(
            guard.state(later),
            CircuitState::Open,
            "a failed test opens it again"
        );

        let much_later = later + Duration::from_secs(31);
        guard
            .admit("p", much_later)
            .unwrap()
            .finish("p", Ok(()), much_later);
        assert_eq!(guard.state(much_later), CircuitState::Closed);
        guard
            .admit("p", much_later)
            .unwrap()
            .finish("p", Ok(()), much_later);
    }

    #[test]
    fn only_misbehaviour_counts_and_zero_failures_never_opens() {
        let guard = Guard::new(None, config(1));
        let now = Instant::now();
        for error in [
            EvalError::Policy("cannot decide".into()),
            EvalError::MemoryBudget(1 << 20),
        ] {
            guard.admit("p", now).unwrap().finish("p", Err(&error), now);
        }
        assert_eq!(guard.state(now), CircuitState::Closed);
        guard
            .admit("p", now)
            .unwrap()
            .finish("p", Err(&EvalError::MemoryLimit(1 << 20)), now);
        assert_eq!(guard.state(now), CircuitState::Open);

        let never = Guard::new(None, config(0));
        for _ in 0..10 {
            never
                .admit("p", now)
                .unwrap()
                .finish("p", Err(&TIMEOUT), now);
        }
        assert_eq!(never.state(now), CircuitState::Closed);
    }

    #[test]
    fn the_bulkhead_caps_evaluations_at_once_and_frees_a_slot_when_one_ends() {
        let guard = Guard::new(Some(2), config(3));
        let now = Instant::now();
        let first = guard.admit("p", now).unwrap();
        let second = guard.admit("p", now).unwrap();
        assert_eq!(
            guard.admit("p", now).unwrap_err(),
            Refusal::Busy { limit: 2 }
        );
        first.finish("p", Ok(()), now);
        let third = guard.admit("p", now).unwrap();
        drop((second, third));
        assert_eq!(guard.in_flight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_test_evaluation_that_never_finishes_lets_the_next_one_test() {
        let guard = Guard::new(None, config(1));
        let now = Instant::now();
        guard
            .admit("p", now)
            .unwrap()
            .finish("p", Err(&TIMEOUT), now);
        let later = now + Duration::from_secs(31);
        drop(guard.admit("p", later).unwrap()); // as if the evaluation panicked
        let probe = guard.admit("p", later).expect("the turn was given back");
        probe.finish("p", Ok(()), later);
        assert_eq!(guard.state(later), CircuitState::Closed);
    }

    #[test]
    fn a_probe_refused_by_the_bulkhead_lets_another_probe_run() {
        let guard = Guard::new(Some(1), config(1));
        let now = Instant::now();
        guard
            .admit("p", now)
            .unwrap()
            .finish("p", Err(&TIMEOUT), now);
        // An evaluation admitted before the circuit opened still holds the slot.
        guard.in_flight.fetch_add(1, Ordering::AcqRel);
        let later = now + Duration::from_secs(31);
        assert_eq!(
            guard.admit("p", later).unwrap_err(),
            Refusal::Busy { limit: 1 }
        );
        guard.in_flight.fetch_sub(1, Ordering::AcqRel);
        // The refused probe gave its turn back: the next review tests the policy.
        let probe = guard.admit("p", later).unwrap();
        probe.finish("p", Ok(()), later);
        assert_eq!(guard.state(later), CircuitState::Closed);
    }

    #[test]
    fn a_policy_is_trusted_once_it_ran_cleanly_and_suspect_after_misbehaving_or_running_slow() {
        let guard = Guard::new(None, config(3));
        let start = Instant::now();
        let run = |at: Duration, took: Duration, result: Result<(), &EvalError>| {
            guard
                .admit("p", start + at)
                .unwrap()
                .finish("p", result, start + at + took)
        };
        let quick = Duration::from_micros(50);
        assert!(!guard.trusted(start), "not before one clean evaluation");
        run(Duration::ZERO, quick, Ok(()));
        assert!(guard.trusted(start));

        // A timeout: suspect for SUSPECT_FOR, though the circuit stays closed.
        let timed_out = Duration::from_secs(1);
        let deadline = Duration::from_millis(300);
        run(timed_out, deadline, Err(&TIMEOUT));
        assert_eq!(guard.state(start + timed_out), CircuitState::Closed);
        run(timed_out + deadline, quick, Ok(()));
        let suspect_until = timed_out + deadline + SUSPECT_FOR;
        assert!(!guard.trusted(start + suspect_until - quick));
        assert!(guard.trusted(start + suspect_until + quick));

        // A clean but slow evaluation makes it suspect too.
        let slow_at = Duration::from_secs(1000);
        run(slow_at, SLOW + quick, Ok(()));
        assert!(!guard.trusted(start + slow_at + SUSPECT_FOR - quick));
        assert!(guard.trusted(start + slow_at + SLOW + SUSPECT_FOR + quick * 2));
    }

    #[test]
    fn a_policy_whose_circuit_is_not_closed_is_never_trusted() {
        let guard = Guard::new(
            None,
            CircuitConfig {
                failures: 1,
                cooldown: SUSPECT_FOR * 4,
            },
        );
        let start = Instant::now();
        guard.admit("p", start).unwrap().finish("p", Ok(()), start);
        guard
            .admit("p", start)
            .unwrap()
            .finish("p", Err(&TIMEOUT), start);
        // The suspect time is over, the cooldown is not.
        let later = start + SUSPECT_FOR * 2;
        assert_eq!(guard.state(later), CircuitState::Open);
        assert!(!guard.trusted(later));
        // Past the cooldown, half-open until a test evaluation succeeds.
        let after = start + SUSPECT_FOR * 5;
        assert_eq!(guard.state(after), CircuitState::HalfOpen);
        assert!(!guard.trusted(after));
        guard.admit("p", after).unwrap().finish("p", Ok(()), after);
        assert!(guard.trusted(after));
    }
}
