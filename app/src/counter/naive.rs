//! The benchmark baseline: one visit at a time, read-increment-write-fsync in place, the way
//! the course labs counted (plus the fsync they lacked, so the comparison is about the same
//! durability). See [`super::file::VisitsFile::increment_in_place`] for why it is not used.

use std::time::Instant;

use super::{Kind, Shared};

/// Runs until the counter closes and its queue is empty.
pub(super) fn run(shared: &Shared) {
    while let Some(mut queue) = shared.wait_for_work() {
        let Some(waiter) = queue.waiting.pop_front() else {
            continue;
        };
        drop(queue);
        let visits = u64::from(waiter.kind == Kind::Visit);
        let started = Instant::now();
        let outcome = shared.file.increment_in_place(visits);
        let metrics = &shared.metrics;
        metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(value) => {
                metrics.commits.inc();
                metrics.batch_visits.observe(visits as f64);
                metrics.visits.inc_by(visits);
                shared.acknowledge(vec![waiter], value - visits, value);
                shared.note_success();
            }
            Err(error) => {
                metrics.failed_commits.inc();
                shared.note_failure(&error);
                shared.fail(vec![waiter], error);
            }
        }
    }
}
