//! Where log lines go: stderr, written by a thread of its own.
//!
//! Why: at the default level the server logs one line per review, written by
//! the thread that decided it. Writing each line with its own `write(2)` to
//! stderr — a pipe to the container runtime in a pod — under stderr's lock cost
//! ~50-90 µs of server CPU per review at saturation (docs/performance.md, history of 2026-12-02). Handing
//! each line to a writer thread over a channel still woke that thread for most
//! lines: ~20 µs per review, a quarter of a cheap review's cost, in futex calls
//! and context switches on both sides.
//!
//! So a review's thread formats its line and appends it to one shared buffer,
//! and wakes the writer only when it sleeps for want of lines. The writer lets
//! [`LINGER`] pass before it takes the buffer (unless [`ENOUGH`] is already
//! pending): under load that gathers the lines of many reviews into one
//! `write(2)` and one wake-up, at the price of a line reaching stderr up to
//! [`LINGER`] later when the pipe keeps up. Nothing is dropped: a thread that
//! finds [`FULL`] bytes waiting for the writer waits for it (back-pressure), so
//! a log that records what the webhook did stays complete, and dropping
//! [`FlushOnDrop`] writes out what is left. Only should the writer thread die
//! are lines dropped, so that no thread ever waits for it in vain.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer lets lines gather after the first one wakes it.
const LINGER: Duration = Duration::from_millis(1);

/// Pending bytes from which the writer writes at once, without lingering (a
/// slow pipe, or a burst).
const ENOUGH: usize = 64 << 10;

/// Bytes waiting for the writer at which a logging thread waits for it (~8,000
/// review lines).
const FULL: usize = 2 << 20;

/// How long dropping [`FlushOnDrop`] waits for the writer.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the logging threads and the writer share.
#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// The writer waits here for lines or a flush request.
    wake_writer: Condvar,
    /// Logging threads wait here for room, and a flush for its end.
    written: Condvar,
}

#[derive(Default)]
struct Pending {
    /// Whole lines, in the order their threads finished them.
    bytes: Vec<u8>,
    /// The writer sleeps on `wake_writer` until told.
    writer_asleep: bool,
    /// Flushes asked for, and how many of them are done.
    flushes_asked: u64,
    flushes_done: u64,
    /// The writer thread is gone (it panicked): lines are dropped, never waited
    /// on.
    writer_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A thread that panicked while logging left whole lines or none.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one whole line, waiting first while the writer is [`FULL`] behind.
    fn push(&self, line: &[u8]) {
        let mut pending = self.lock();
        while pending.bytes.len() >= FULL && !pending.writer_gone {
            pending = self
                .written
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.writer_gone {
            return;
        }
        pending.bytes.extend_from_slice(line);
        if pending.writer_asleep {
            pending.writer_asleep = false;
            self.wake_writer.notify_one();
        }
    }

    /// Waits until everything appended before this call is written and flushed,
    /// or `timeout` passes.
    fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut pending = self.lock();
        pending.flushes_asked += 1;
        let asked = pending.flushes_asked;
        pending.writer_asleep = false;
        self.wake_writer.notify_one();
        while pending.flushes_done < asked && !pending.writer_gone {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            pending = self
                .written
                .wait_timeout(pending, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The `MakeWriter` the log subscriber formats into.
#[derive(Clone)]
pub struct LogOutput {
    shared: Arc<Shared>,
}

/// Flushes what is waiting when dropped: keep it until the process ends.
pub struct FlushOnDrop {
    shared: Arc<Shared>,
    _writer: JoinHandle<()>,
}

impl LogOutput {
    /// Starts the writer thread on `out` (stderr in the binary).
    pub fn start(out: impl Write + Send + 'static) -> (Self, FlushOnDrop) {
        let shared = Arc::new(Shared::default());
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("stsguard-log".into())
                .spawn(move || write_lines(&shared, out))
                .expect("spawning the log writer thread")
        };
        (
            Self {
                shared: shared.clone(),
            },
            FlushOnDrop {
                shared,
                _writer: writer,
            },
        )
    }
}

/// Tells the logging threads when the writer thread is gone.
struct Gone<'a>(&'a Shared);

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        self.0.lock().writer_gone = true;
        self.0.written.notify_all();
    }
}

/// The writer thread: sleeps until there are lines, lets more gather for
/// [`LINGER`] (not when a flush waits or [`ENOUGH`] are pending), writes them
/// all with one call. Ends with the process.
fn write_lines(shared: &Shared, mut out: impl Write) {
    let _gone = Gone(shared);
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.bytes.is_empty() && pending.flushes_done == pending.flushes_asked {
            pending.writer_asleep = true;
            pending = shared
                .wake_writer
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.flushes_done == pending.flushes_asked && pending.bytes.len() < ENOUGH {
            drop(pending);
            std::thread::sleep(LINGER);
            pending = shared.lock();
        }
        std::mem::swap(&mut batch, &mut pending.bytes);
        let flushes = pending.flushes_asked;
        drop(pending);
        // Room again for threads that waited on a full buffer.
        shared.written.notify_all();
        // stderr gone (a closed pipe): the lines are lost, the server goes on.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        // One burst (or one huge line) does not keep its memory for good.
        if batch.capacity() > FULL * 2 {
            batch = Vec::new();
        }
        let mut pending = shared.lock();
        if pending.flushes_done < flushes {
            pending.flushes_done = flushes;
            shared.written.notify_all();
        }
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.flush(FLUSH_TIMEOUT);
    }
}

/// One event's line, appended whole to the shared buffer when the formatter is
/// done with it (so lines of concurrent reviews never interleave).
pub struct Line<'a> {
    bytes: Vec<u8>,
    shared: &'a Shared,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            self.shared.push(&self.bytes);
        }
    }
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            bytes: Vec::with_capacity(256),
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A `Write` whose bytes the test can read, taking `delay` per call (a slow
    /// pipe).
    #[derive(Clone, Default)]
    struct Captured {
        bytes: Arc<Mutex<Vec<u8>>>,
        delay: Duration,
        largest_write: Arc<Mutex<usize>>,
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.delay);
            let mut largest = self.largest_write.lock().unwrap();
            *largest = (*largest).max(bytes.len());
            self.bytes.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Writes `lines` lines from each of `threads` threads, each line
    /// `thread T line N` padded with `padding` bytes.
    fn log_from_threads(output: &LogOutput, threads: usize, lines: usize, padding: usize) {
        std::thread::scope(|scope| {
            for thread in 0..threads {
                scope.spawn(move || {
                    for n in 0..lines {
                        let mut line = output.make_writer();
                        write!(line, "thread {thread} line {n} {}", "x".repeat(padding)).unwrap();
                        line.write_all(b"\n").unwrap();
                    }
                });
            }
        });
    }

    /// Each thread's line numbers, in the order they were written out.
    fn numbers_by_thread(text: &str, threads: usize) -> Vec<Vec<usize>> {
        (0..threads)
            .map(|thread| {
                text.lines()
                    .filter_map(|line| line.strip_prefix(&format!("thread {thread} line ")))
                    .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_from_each_thread_before_the_guard_is_gone() {
        let out = Captured::default();
        let (output, guard) = LogOutput::start(out.clone());
        log_from_threads(&output, 4, 5000, 0);
        drop(guard);
        let text = out.text();
        assert_eq!(text.lines().count(), 20_000);
        for (thread, numbers) in numbers_by_thread(&text, 4).into_iter().enumerate() {
            assert_eq!(numbers, (0..5000).collect::<Vec<_>>(), "thread {thread}");
        }
    }

    #[test]
    fn a_writer_far_behind_makes_loggers_wait_and_loses_nothing() {
        // ~9 MiB through a pipe that takes 5 ms per write: the buffer fills to
        // FULL again and again.
        let out = Captured {
            delay: Duration::from_millis(5),
            ..Captured::default()
        };
        let (output, guard) = LogOutput::start(out.clone());
        log_from_threads(&output, 3, 3000, 1000);
        drop(guard);
        let text = out.text();
        assert!(text.len() > 4 * FULL, "{} bytes", text.len());
        // Never more than FULL and the line that reached it held in memory.
        let largest = *out.largest_write.lock().unwrap();
        assert!(largest < FULL + 1100, "{largest} bytes");
        for (thread, numbers) in numbers_by_thread(&text, 3).into_iter().enumerate() {
            assert_eq!(numbers, (0..3000).collect::<Vec<_>>(), "thread {thread}");
        }
    }

    #[test]
    fn loggers_never_wait_on_a_writer_that_is_gone() {
        struct Panicking;
        impl Write for Panicking {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                panic!("the writer thread panics (as this test wants)");
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (output, guard) = LogOutput::start(Panicking);
        // Past FULL, a logger would wait for ever on a dead writer.
        log_from_threads(&output, 2, 2 * FULL / 1000, 1000);
        drop(guard);
        assert!(output.shared.lock().writer_gone);
    }

    #[test]
    fn a_line_reaches_the_output_without_a_flush() {
        let out = Captured::default();
        let (output, _guard) = LogOutput::start(out.clone());
        log_from_threads(&output, 1, 1, 0);
        // Bounded by the test's patience, not by a time it asserts.
        for _ in 0..500 {
            if out.text() == "thread 0 line 0 \n" {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the line was not written: {:?}", out.text());
    }
}
