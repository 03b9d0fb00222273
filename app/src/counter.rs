//! The visit counter: a count that lives in one file and is never acknowledged before it is
//! on disk.
//!
//! Why it is built this way: the lab apps this replaces read the file, added one and wrote it
//! back on every request. That loses visits under concurrency (two requests read the same
//! number), can leave an empty file after a crash (the write truncates first), and, once an
//! fsync is added to make it durable, caps the app at one request per disk flush. Here:
//!
//! ```text
//!  handlers ──visit()──▶ queue ──▶ commit thread 0 ─┐  write temp 0, fsync    (in parallel)
//!     ▲                        └──▶ commit thread 1 ─┤  rename over the file   (in batch order)
//!     │                                             └─ fsync the directory    (in parallel)
//!     └──────────── visit number, once durable ◀────────────┘
//! ```
//!
//! * **Group commit.** A commit thread takes every visit waiting in the queue as one batch
//!   and writes the count after all of them with one write, one fsync, one rename and one
//!   directory fsync (see [`file`]). Visits that arrive meanwhile form the next batch.
//! * **Overlapping commits.** Up to `commit_threads` batches are in flight at once. Their
//!   fsyncs overlap (the file system folds concurrent flushes into one journal commit), but
//!   their renames happen strictly in batch order, so the file's count only ever grows.
//! * **Acknowledged only when durable.** A visit's number is returned after the directory
//!   fsync of its batch; a handler answers only then.
//! * **A failed write advances nothing.** If a batch cannot be staged or renamed (disk full,
//!   read-only volume), its visits and those of any later batch already counted on top of it
//!   get an error, and counting resumes from the count last written. The next batch simply
//!   tries again, so the app recovers as soon as the disk does.
//!
//! [`Storage::Naive`] keeps the labs' read-increment-write-fsync per request, one at a time,
//! as a benchmark baseline.

pub mod file;
mod group;
mod naive;

use std::collections::VecDeque;
use std::fs::{File, TryLockError};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::metrics::StorageMetrics;

pub use file::{Corruption, VisitsFile};

/// How visits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// Batches concurrent visits into one atomic, fsync'ed replacement of the file.
    GroupCommit,
    /// BENCHMARK BASELINE ONLY: read, increment, overwrite in place and fsync the file for
    /// every visit, one at a time, as the course labs did. Not crash-safe.
    Naive,
}

/// Settings for [`Counter::open`].
#[derive(Debug, Clone)]
pub struct CounterConfig {
    /// The visits file.
    pub path: PathBuf,
    /// How visits are written.
    pub storage: Storage,
    /// How many group commits may be in flight at once (ignored by [`Storage::Naive`]).
    pub commit_threads: usize,
}

/// Why the counter could not start. Each of these stops the app: it must not serve counts it
/// cannot trust, and it never overwrites a file it could not read.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The visits path ends in `/` or `..`.
    #[error("{path} does not name a file")]
    NotAFileName {
        /// The configured path.
        path: PathBuf,
    },
    /// The directory does not exist.
    #[error(
        "directory {dir} does not exist: mount the data volume there or point --visits-file \
         into an existing directory (the app does not create it, so that a missing volume \
         mount is not silently replaced by the container's own disk)"
    )]
    MissingDir {
        /// The visits file's directory.
        dir: PathBuf,
    },
    /// Something that is not a directory is in the directory's place.
    #[error("{dir} is not a directory")]
    DirNotADirectory {
        /// The visits file's directory.
        dir: PathBuf,
    },
    /// The directory could not be inspected.
    #[error("cannot access directory {dir}: {cause}")]
    ReadDir {
        /// The visits file's directory.
        dir: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// The file exists but could not be read.
    #[error("cannot read the visit count from {path} ({cause}); the file was left untouched")]
    Read {
        /// The visits file.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// The file exists but does not hold a count.
    #[error(
        "{path} does not hold a visit count: {problem}; the file was left untouched: repair \
         it (it must hold one decimal number) or move it away to start counting from 0"
    )]
    Corrupt {
        /// The visits file.
        path: PathBuf,
        /// What is wrong with it.
        problem: Corruption,
    },
    /// Another process is counting into the same directory.
    #[error(
        "another process holds the lock on {dir}: two counter-apps sharing one visits file \
         would lose visits; stop the other one or give each its own volume"
    )]
    Locked {
        /// The visits file's directory.
        dir: PathBuf,
    },
    /// A commit thread could not be started.
    #[error("cannot start the commit threads: {0}")]
    Spawn(io::Error),
}

/// Why a visit was not recorded. Shared by every visit of a failed batch.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Creating or writing the (temporary) file failed.
    #[error("cannot write {path}: {cause}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// fsync of the written file failed.
    #[error("cannot flush {path} to disk: {cause}")]
    Sync {
        /// The file being flushed.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// Renaming the temporary file over the visits file failed.
    #[error("cannot rename {from} to {to}: {cause}")]
    Rename {
        /// The temporary file.
        from: PathBuf,
        /// The visits file.
        to: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// fsync of the directory failed: the new count is in place but may not survive a
    /// power cut.
    #[error("cannot flush directory {path} to disk: {cause}")]
    SyncDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// Only in [`Storage::Naive`], which rereads the file on every visit.
    #[error("{path} does not hold a visit count: {problem}")]
    Corrupt {
        /// The visits file.
        path: PathBuf,
        /// What is wrong with it.
        problem: Corruption,
    },
    /// This batch was counted on top of an earlier one that failed.
    #[error("an earlier write of the count failed, so this visit was not recorded either")]
    EarlierFailed,
    /// The counter is shutting down.
    #[error("the counter is shutting down")]
    Closed,
    /// A commit thread died (a bug); the app reports itself unhealthy.
    #[error("the commit thread stopped unexpectedly")]
    WriterGone,
}

impl CommitError {
    /// The underlying I/O error, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Self::Write { cause, .. }
            | Self::Sync { cause, .. }
            | Self::Rename { cause, .. }
            | Self::SyncDir { cause, .. } => Some(cause),
            _ => None,
        }
    }

    /// A hint for the operator, when the cause is a common one.
    pub fn hint(&self) -> Option<&'static str> {
        match self.io_error()?.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Some("the data volume is full")
            }
            io::ErrorKind::ReadOnlyFilesystem => Some("the data volume is read-only"),
            io::ErrorKind::PermissionDenied => {
                Some("the app may not write to the data volume (check fsGroup and the mount)")
            }
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                Some("the data directory is gone (is the volume still mounted?)")
            }
            _ => None,
        }
    }
}

/// A visit's outcome: its number, or why it was not recorded.
pub type CommitResult = Result<u64, Arc<CommitError>>;

/// The durable visit count. Cheap to clone; all clones share one counter.
#[derive(Clone)]
pub struct Counter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("path", &self.inner.shared.file.path())
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Held while the counter is open: an advisory lock on the directory.
    lock: Mutex<Option<File>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Let the commit threads finish the queue and exit even if `close` was not called.
        self.shared.begin_close();
    }
}

/// What a request asks of the commit threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Count one visit.
    Visit,
    /// Count nothing, but prove the count can be written (readiness).
    Probe,
}

struct Waiter {
    kind: Kind,
    reply: oneshot::Sender<CommitResult>,
}

/// State shared with the commit threads.
struct Shared {
    file: VisitsFile,
    queue: Mutex<Queue>,
    /// Signalled when the queue gains work or the counter closes.
    work: Condvar,
    /// Renames happen in batch order; see `group`.
    turn: Mutex<Turn>,
    turn_changed: Condvar,
    /// The highest count acknowledged as durable.
    durable: AtomicU64,
    /// Commit threads that are running.
    alive: AtomicUsize,
    /// The last commit failed: log the next success, not every failure.
    failing: AtomicBool,
    metrics: StorageMetrics,
}

struct Queue {
    waiting: VecDeque<Waiter>,
    closing: bool,
    /// Sequence number of the next batch.
    next_seq: u64,
    /// The count after the last batch handed out (not yet necessarily written).
    assigned: u64,
    /// Bumped when a batch fails: batches handed out before that were counted on top of it.
    epoch: u64,
}

struct Turn {
    /// The batch whose turn it is to rename.
    next_seq: u64,
    /// The count in the visits file after the last successful rename.
    renamed: u64,
}

impl Shared {
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_turn(&self) -> MutexGuard<'_, Turn> {
        self.turn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin_close(&self) {
        self.lock_queue().closing = true;
        self.work.notify_all();
    }

    /// Blocks until there is work; `None` once the counter is closing and the queue is empty.
    fn wait_for_work(&self) -> Option<MutexGuard<'_, Queue>> {
        let mut queue = self.lock_queue();
        loop {
            if !queue.waiting.is_empty() {
                return Some(queue);
            }
            if queue.closing {
                return None;
            }
            queue = self
                .work
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Records a durable count and answers its batch: the i-th visit gets `base + i`.
    fn acknowledge(&self, waiters: Vec<Waiter>, base: u64, value: u64) {
        self.durable.fetch_max(value, Ordering::AcqRel);
        let mut number = base;
        for waiter in waiters {
            let answer = match waiter.kind {
                Kind::Visit => {
                    number += 1;
                    number
                }
                Kind::Probe => value,
            };
            // The client may have gone away; its visit still counts.
            let _ = waiter.reply.send(Ok(answer));
        }
        debug_assert_eq!(number, value);
    }

    /// Logs the first failure of a run of them (a full disk fails every batch; one line
    /// says so).
    fn note_failure(&self, error: &CommitError) {
        if self.failing.swap(true, Ordering::AcqRel) {
            tracing::debug!(%error, "count not written");
        } else {
            tracing::warn!(
                %error,
                hint = error.hint().unwrap_or(""),
                "count not written; visits get 503 until a write succeeds"
            );
        }
    }

    fn note_success(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!(path = %self.file.path().display(), "count written again; storage recovered");
        }
    }

    fn fail(&self, waiters: Vec<Waiter>, error: CommitError) {
        let error = Arc::new(error);
        for waiter in waiters {
            let _ = waiter.reply.send(Err(Arc::clone(&error)));
        }
    }
}

/// Decrements the live-thread count when a commit thread ends, however it ends.
struct AliveGuard<'a>(&'a AtomicUsize);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Counter {
    /// Loads the count and starts the commit threads.
    ///
    /// Fails, without modifying anything on disk, if the directory is missing, the file
    /// exists but cannot be read or parsed, or another process has the directory locked.
    /// A directory that is not writable is *not* an error here: the app starts, reports
    /// not ready, and answers visits with an error until the volume is writable.
    pub fn open(config: CounterConfig, metrics: StorageMetrics) -> Result<Self, OpenError> {
        let CounterConfig {
            path,
            storage,
            commit_threads,
        } = config;
        let file = VisitsFile::new(path)?;
        file.check_dir()?;
        let lock = lock_dir(&file)?;
        let count = file.load()?;
        metrics
            .stored_visits
            .set(i64::try_from(count).unwrap_or(i64::MAX));

        let threads = match storage {
            Storage::GroupCommit => commit_threads.max(1),
            Storage::Naive => 1,
        };
        let shared = Arc::new(Shared {
            file,
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                closing: false,
                next_seq: 0,
                assigned: count,
                epoch: 0,
            }),
            work: Condvar::new(),
            turn: Mutex::new(Turn {
                next_seq: 0,
                renamed: count,
            }),
            turn_changed: Condvar::new(),
            durable: AtomicU64::new(count),
            alive: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            metrics,
        });

        let mut handles = Vec::with_capacity(threads);
        for slot in 0..threads {
            let shared_for_thread = Arc::clone(&shared);
            shared.alive.fetch_add(1, Ordering::AcqRel);
            let spawned = std::thread::Builder::new()
                .name(format!("commit-{slot}"))
                .spawn(move || {
                    let _alive = AliveGuard(&shared_for_thread.alive);
                    match storage {
                        Storage::GroupCommit => group::run(&shared_for_thread, slot),
                        Storage::Naive => naive::run(&shared_for_thread),
                    }
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(error) => {
                    shared.alive.fetch_sub(1, Ordering::AcqRel);
                    shared.begin_close();
                    return Err(OpenError::Spawn(error));
                }
            }
        }
        tracing::info!(
            path = %shared.file.path().display(),
            count,
            ?storage,
            commit_threads = threads,
            "visit count loaded"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                threads: Mutex::new(handles),
                lock: Mutex::new(lock),
            }),
        })
    }

    /// Counts one visit and returns its number once it is durable.
    pub async fn visit(&self) -> CommitResult {
        self.submit(Kind::Visit).await
    }

    /// Writes the current count again without counting anything: proves the count can be
    /// written right now. Shares a commit with any visits in flight.
    pub async fn probe(&self) -> CommitResult {
        self.submit(Kind::Probe).await
    }

    async fn submit(&self, kind: Kind) -> CommitResult {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.inner.shared.lock_queue();
            if queue.closing {
                return Err(Arc::new(CommitError::Closed));
            }
            queue.waiting.push_back(Waiter { kind, reply });
        }
        self.inner.shared.work.notify_one();
        answer
            .await
            .unwrap_or_else(|_| Err(Arc::new(CommitError::WriterGone)))
    }

    /// The highest count acknowledged as durable.
    pub fn count(&self) -> u64 {
        self.inner.shared.durable.load(Ordering::Acquire)
    }

    /// The visits file.
    pub fn path(&self) -> &std::path::Path {
        self.inner.shared.file.path()
    }

    /// True while every commit thread is running. A dead one is a bug; restarting the
    /// process is the cure, so liveness reports it.
    pub fn is_healthy(&self) -> bool {
        let expected = self
            .inner
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        expected > 0 && self.inner.shared.alive.load(Ordering::Acquire) == expected
    }

    /// Stops taking visits, finishes every queued commit and waits for the commit threads,
    /// then releases the directory lock. Visits submitted afterwards fail with
    /// [`CommitError::Closed`].
    pub async fn close(&self) {
        self.inner.shared.begin_close();
        let handles = std::mem::take(
            &mut *self
                .inner
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let joined = tokio::task::spawn_blocking(move || {
            for handle in handles {
                if handle.join().is_err() {
                    tracing::error!("a commit thread panicked");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::error!("waiting for the commit threads failed");
        }
        self.inner
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        tracing::info!(count = self.count(), "visit count flushed");
    }
}

/// Takes an advisory lock on the directory, so a second process pointed at the same volume
/// refuses to start instead of silently losing visits. File systems that do not support
/// locking (some network file systems) only get a warning.
fn lock_dir(file: &VisitsFile) -> Result<Option<File>, OpenError> {
    let dir = match File::open(file.dir()) {
        Ok(dir) => dir,
        Err(error) => {
            tracing::warn!(dir = %file.dir().display(), %error, "cannot open the directory to lock it; continuing without a lock");
            return Ok(None);
        }
    };
    match dir.try_lock() {
        Ok(()) => Ok(Some(dir)),
        Err(TryLockError::WouldBlock) => Err(OpenError::Locked {
            dir: file.dir().to_owned(),
        }),
        Err(TryLockError::Error(error)) => {
            tracing::warn!(dir = %file.dir().display(), %error, "cannot lock the directory; continuing without a lock");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn open(dir: &std::path::Path, storage: Storage) -> Counter {
        Counter::open(
            CounterConfig {
                path: dir.join("visits"),
                storage,
                commit_threads: 4,
            },
            StorageMetrics::default(),
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_visits_get_distinct_numbers_and_all_are_stored() {
        for storage in [Storage::GroupCommit, Storage::Naive] {
            let dir = tempfile::tempdir().unwrap();
            let counter = open(dir.path(), storage);
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let counter = counter.clone();
                tasks.push(tokio::spawn(async move {
                    let mut numbers = Vec::new();
                    for _ in 0..10 {
                        numbers.push(counter.visit().await.unwrap());
                    }
                    numbers
                }));
            }
            let mut numbers = Vec::new();
            for task in tasks {
                numbers.extend(task.await.unwrap());
            }
            numbers.sort_unstable();
            assert_eq!(numbers, (1..=200).collect::<Vec<_>>(), "{storage:?}");
            assert_eq!(counter.count(), 200);
            assert_eq!(counter.probe().await.unwrap(), 200);
            counter.close().await;
            assert_eq!(
                fs::read_to_string(dir.path().join("visits")).unwrap(),
                "200\n"
            );
        }
    }

    #[tokio::test]
    async fn a_failed_write_advances_nothing_and_the_next_one_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let counter = open(dir.path(), Storage::GroupCommit);
        assert_eq!(counter.visit().await.unwrap(), 1);
        // Occupy every slot's temporary file name with a directory: staging fails.
        for slot in 0..4 {
            fs::create_dir(dir.path().join(format!(".visits.tmp{slot}"))).unwrap();
        }
        let error = counter.visit().await.unwrap_err();
        assert!(matches!(*error, CommitError::Write { .. }), "{error:?}");
        assert!(counter.probe().await.is_err());
        assert_eq!(counter.count(), 1);
        assert_eq!(
            fs::read_to_string(dir.path().join("visits")).unwrap(),
            "1\n"
        );
        for slot in 0..4 {
            fs::remove_dir(dir.path().join(format!(".visits.tmp{slot}"))).unwrap();
        }
        assert_eq!(counter.visit().await.unwrap(), 2);
        counter.close().await;
        assert_eq!(
            fs::read_to_string(dir.path().join("visits")).unwrap(),
            "2\n"
        );
    }

    /// Failures in one commit slot while others keep succeeding, batches overlapping: the
    /// visits that succeeded are numbered 1..=n with no gap or repeat, and n is what is
    /// stored. This is what the epoch reset in `group` guarantees.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_among_overlapping_commits_never_skew_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let counter = open(dir.path(), Storage::GroupCommit);
        fs::create_dir(dir.path().join(".visits.tmp2")).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                let mut numbers = Vec::new();
                let mut failures = 0;
                for _ in 0..50 {
                    match counter.visit().await {
                        Ok(number) => numbers.push(number),
                        Err(_) => failures += 1,
                    }
                }
                (numbers, failures)
            }));
        }
        let (mut numbers, mut failures) = (Vec::new(), 0);
        for task in tasks {
            let (ok, failed) = task.await.unwrap();
            numbers.extend(ok);
            failures += failed;
        }
        numbers.sort_unstable();
        let succeeded = numbers.len() as u64;
        assert!(failures > 0, "slot 2 never failed: the test proved nothing");
        assert!(succeeded > 0);
        assert_eq!(numbers, (1..=succeeded).collect::<Vec<_>>());
        assert_eq!(counter.count(), succeeded);
        counter.close().await;
        assert_eq!(
            fs::read_to_string(dir.path().join("visits")).unwrap(),
            format!("{succeeded}\n")
        );
    }

    #[tokio::test]
    async fn close_refuses_new_visits_and_releases_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let counter = open(dir.path(), Storage::GroupCommit);
        assert!(counter.is_healthy());
        counter.visit().await.unwrap();
        let second = Counter::open(
            CounterConfig {
                path: dir.path().join("visits"),
                storage: Storage::GroupCommit,
                commit_threads: 1,
            },
            StorageMetrics::default(),
        );
        assert!(
            matches!(second, Err(OpenError::Locked { .. })),
            "{second:?}"
        );
        counter.close().await;
        let refused = counter.visit().await.unwrap_err();
        assert!(matches!(*refused, CommitError::Closed), "{refused:?}");
        let reopened = open(dir.path(), Storage::GroupCommit);
        assert_eq!(reopened.count(), 1);
        reopened.close().await;
    }
}
