//! Threads that evaluate reviews: a fixed pool fed by a queue. The server runs
//! two, one for reviews of trusted policies and one for suspect ones (see
//! the server), so a looping policy holds up only the second.
//!
//! A policy is synchronous CPU work that may run up to its timeout, so a review
//! runs on the async workers that serve HTTP only when its policies are trusted
//! and the trusted pool is idle ([`Evaluators::inline_turn`]): then handing it
//! here and back would cost two wake-ups of sleeping threads, most of a review's
//! latency at low load. Policies used to run on tokio's blocking pool behind a
//! semaphore; then a finished evaluation released its permit, a waiting handler
//! had to be scheduled to take it and hand the next review to a blocking thread
//! — and under load the cores sat idle in between
//! (4 permits: ~5,300 reviews/s; 8: ~6,100 on the same 2 cores). Here a thread
//! that finishes takes the next queued review itself, so a few threads keep the
//! cores busy, and at most that many evaluations hold guest memory at once.
//!
//! A review that waits in the queue still counts against its deadline: when it
//! runs with no time left, the chain answers with each policy's failurePolicy.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

/// Reviews that may wait for a thread; beyond this, handlers wait to enqueue.
const QUEUE: usize = 4096;

type Job = Box<dyn FnOnce() + Send>;

/// A handle to the pool: cheap to clone. The threads end when the last handle
/// is dropped and the queue is empty.
#[derive(Clone, Debug)]
pub struct Evaluators {
    queue: mpsc::Sender<Job>,
    /// Evaluations queued or running on the threads, plus the one running
    /// inline (see [`Evaluators::inline_turn`]).
    busy: Arc<AtomicUsize>,
}

/// One evaluation in progress, counted as the pool's business until dropped:
/// a job on the threads, or a review evaluated inline.
#[derive(Debug)]
pub struct Evaluating {
    busy: Arc<AtomicUsize>,
}

impl Drop for Evaluating {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The pool could not run the job: its threads are gone, or the job panicked.
#[derive(Debug, thiserror::Error)]
#[error("the evaluation did not complete (see the log)")]
pub struct Lost;

impl Evaluators {
    /// Starts `threads` evaluation threads (at least one), named `NAME-INDEX`.
    pub fn start(name: &str, threads: usize) -> Self {
        let (queue, jobs) = mpsc::channel::<Job>(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        for index in 0..threads.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || work(&jobs))
                .expect("spawning an evaluation thread");
        }
        Self {
            queue,
            busy: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A turn to evaluate on the caller's (async) thread, given only when
    /// nothing else is evaluating in this pool. Idle, the hand-off to a pool thread and back
    /// is two wake-ups of sleeping threads, most of a review's latency; busy, a
    /// pool thread takes the next review without sleeping, and the async
    /// workers are better left reading and writing the other connections.
    pub fn inline_turn(&self) -> Option<Evaluating> {
        self.busy
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| Evaluating {
                busy: self.busy.clone(),
            })
    }

    /// Runs `f` on a pool thread and waits for its result.
    pub async fn run<R, F>(&self, f: F) -> Result<R, Lost>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        // Counted from the handler until the job ends (or is dropped unrun).
        let turn = Evaluating {
            busy: self.busy.clone(),
        };
        turn.busy.fetch_add(1, Ordering::AcqRel);
        let job: Job = Box::new(move || {
            let result = f();
            // The job has ended: no longer counted once its handler hears so.
            drop(turn);
            let _ = done.send(result);
        });
        self.queue.send(job).await.map_err(|_| Lost)?;
        result.await.map_err(|_| Lost)
    }
}

/// One thread's life: take the next job, run it, repeat until the queue closes.
fn work(jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // Holding the lock while waiting is the point: one idle thread waits on
        // the queue, the others wait for the lock.
        let job = jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv();
        let Some(job) = job else { return };
        // A panic fails that review (its handler sees `Lost`), not the thread.
        if std::panic::catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("an evaluation panicked; the review is answered with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn runs_jobs_on_its_threads_and_survives_a_panic() {
        let pool = Evaluators::start("stsguard-eval", 2);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("stsguard-eval-"));
        assert!(pool.run(|| panic!("boom")).await.is_err());
        // Both threads are still there: each job waits for the other to start.
        let (first_started, wait_for_first) = channel();
        let (second_started, wait_for_second) = channel();
        let wait = Duration::from_secs(30);
        let (first, second) = tokio::join!(
            pool.run(move || {
                first_started.send(()).is_ok() && wait_for_second.recv_timeout(wait).is_ok()
            }),
            pool.run(move || {
                wait_for_first.recv_timeout(wait).is_ok() && second_started.send(()).is_ok()
            }),
        );
        assert!(
            first.unwrap() && second.unwrap(),
            "the two jobs ran at once"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_job_of_many_concurrent_handlers_runs_once() {
        // Threads that sleep and wake over and over: a lost wake-up would leave
        // a handler waiting for ever.
        let pool = Evaluators::start("stsguard-eval", 2);
        let ran = Arc::new(AtomicUsize::new(0));
        let handlers: Vec<_> = (0..64)
            .map(|handler| {
                let (pool, ran) = (pool.clone(), ran.clone());
                tokio::spawn(async move {
                    for job in 0..200 {
                        let ran = ran.clone();
                        let answer = pool
                            .run(move || {
                                ran.fetch_add(1, Ordering::Relaxed);
                                handler * 1000 + job
                            })
                            .await;
                        assert_eq!(answer.unwrap(), handler * 1000 + job);
                        if job % 50 == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                })
            })
            .collect();
        for handler in handlers {
            tokio::time::timeout(Duration::from_secs(60), handler)
                .await
                .expect("every job is answered")
                .unwrap();
        }
        assert_eq!(ran.load(Ordering::Relaxed), 64 * 200);
        assert_eq!(pool.busy.load(Ordering::Relaxed), 0);
    }
}
