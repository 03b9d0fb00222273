//! The group-commit loop run by each commit thread.
//!
//! One batch goes through three steps; only the middle one is serialised:
//!
//! ```text
//! take every queued visit   ─ queue lock: seq = n, value = assigned + visits
//! stage(slot, value)        ─ own temp file + fsync, overlapping other threads
//! wait for turn n, rename   ─ strictly in seq order, so the file's count only grows
//! fsync directory, answer   ─ overlapping again
//! ```
//!
//! A batch that fails to stage or rename resets the count handed out to the count last
//! renamed and bumps the epoch; batches handed out before that (they counted the failed
//! visits) fail at their turn instead of writing a count that includes them.

use std::time::Instant;

use super::{CommitError, Kind, Shared};

/// Runs until the counter closes and its queue is empty.
pub(super) fn run(shared: &Shared, slot: usize) {
    while let Some(mut queue) = shared.wait_for_work() {
        let waiters: Vec<_> = queue.waiting.drain(..).collect();
        let visits = waiters.iter().filter(|w| w.kind == Kind::Visit).count() as u64;
        let seq = queue.next_seq;
        queue.next_seq += 1;
        let epoch = queue.epoch;
        let base = queue.assigned;
        let value = base + visits;
        queue.assigned = value;
        drop(queue);

        let started = Instant::now();
        let staged = shared.file.stage(slot, value);

        let mut turn = shared.lock_turn();
        while turn.next_seq != seq {
            turn = shared
                .turn_changed
                .wait(turn)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        // Our turn: no other thread renames until `next_seq` moves on.
        let current_epoch = shared.lock_queue().epoch;
        let installed = if epoch != current_epoch {
            if let Ok(temp) = &staged {
                let _ = std::fs::remove_file(temp);
            }
            Err(CommitError::EarlierFailed)
        } else {
            staged.and_then(|temp| shared.file.install(&temp))
        };
        match &installed {
            Ok(()) => turn.renamed = value,
            Err(CommitError::EarlierFailed) => {}
            Err(_) => {
                // Batches already handed out counted these visits: invalidate them and count
                // on from what the file holds.
                let mut queue = shared.lock_queue();
                queue.epoch += 1;
                queue.assigned = turn.renamed;
            }
        }
        turn.next_seq += 1;
        drop(turn);
        shared.turn_changed.notify_all();

        let outcome = installed.and_then(|()| shared.file.sync_dir());
        let metrics = &shared.metrics;
        metrics
            .commit_duration
            .observe(started.elapsed().as_secs_f64());
        match outcome {
            Ok(()) => {
                metrics.commits.inc();
                metrics.batch_visits.observe(visits as f64);
                metrics.visits.inc_by(visits);
                shared.acknowledge(waiters, base, value);
                shared.note_success();
            }
            Err(error) => {
                metrics.failed_commits.inc();
                if !matches!(error, CommitError::EarlierFailed) {
                    shared.note_failure(&error);
                }
                shared.fail(waiters, error);
            }
        }
    }
}
