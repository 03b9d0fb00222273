//! Where log lines go: stderr, written by a thread of its own.
//!
//! Why: at the default level the server logs one line per review, written by
//! the thread that decided it. Writing each line with its own `write(2)` to
//! stderr — a pipe to the container runtime in a pod — under stderr's lock cost
//! ~50-90 µs of server CPU per review at saturation (README, "Logging"). Here a
//! review's thread only formats its line and hands it over a bounded channel;
//! the writer thread writes whatever has queued up with one syscall and
//! flushes when the queue is empty. Nothing is dropped: when the writer falls
//! behind by [`QUEUE`] lines, a logging thread waits (back-pressure), so a log
//! that records what the webhook did stays complete.

use std::io::Write;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines that may wait for the writer before a logging thread blocks.
const QUEUE: usize = 8192;

enum Message {
    Line(Vec<u8>),
    /// Write everything before this, then answer.
    Flush(SyncSender<()>),
}

/// The `MakeWriter` the log subscriber formats into.
#[derive(Clone)]
pub struct LogOutput {
    queue: SyncSender<Message>,
}

/// Flushes what is queued when dropped: keep it until the process ends.
pub struct FlushOnDrop {
    queue: SyncSender<Message>,
    _writer: JoinHandle<()>,
}

impl LogOutput {
    /// Starts the writer thread on `out` (stderr in the binary).
    pub fn start(out: impl Write + Send + 'static) -> (Self, FlushOnDrop) {
        let (queue, lines) = mpsc::sync_channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("stsguard-log".into())
            .spawn(move || write_lines(lines, out))
            .expect("spawning the log writer thread");
        (
            Self {
                queue: queue.clone(),
            },
            FlushOnDrop {
                queue,
                _writer: writer,
            },
        )
    }
}

fn write_lines(lines: Receiver<Message>, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 << 10, out);
    while let Ok(message) = lines.recv() {
        let mut next = Some(message);
        // Everything queued so far in one buffer, then one flush.
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Message::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = lines.try_recv().ok();
        }
        let _ = out.flush();
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        let (done, flushed) = mpsc::sync_channel(1);
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = flushed.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// One event's line, handed to the writer when the formatter is done with it.
pub struct Line {
    bytes: Vec<u8>,
    queue: SyncSender<Message>,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if !self.bytes.is_empty() {
            // The writer thread only ends with the process.
            let _ = self
                .queue
                .send(Message::Line(std::mem::take(&mut self.bytes)));
        }
    }
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            bytes: Vec::with_capacity(256),
            queue: self.queue.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A `Write` whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_whole_and_in_order_from_each_thread_before_the_guard_is_gone() {
        let out = Shared::default();
        let (output, guard) = LogOutput::start(out.clone());
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let output = output.clone();
                std::thread::spawn(move || {
                    for n in 0..5000 {
                        let mut line = output.make_writer();
                        write!(line, "thread {thread} line {n}").unwrap();
                        line.write_all(b"\n").unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000);
        for thread in 0..4 {
            let numbers: Vec<usize> = lines
                .iter()
                .filter_map(|line| line.strip_prefix(&format!("thread {thread} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(numbers, (0..5000).collect::<Vec<_>>(), "thread {thread}");
        }
    }
}
