//! The log's way out: lines go through a bounded queue to one writer thread, so a
//! slow or stalled stderr (a pipe nobody reads, a full disk behind a journal) never
//! blocks the threads that serve requests. When the queue is full a line is dropped
//! and counted, and the writer says how many once it can write again.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tracing_subscriber::fmt::MakeWriter;

/// Log lines waiting for the writer thread. A burst bigger than this (at typical line
/// sizes, a few hundred KiB) is dropped rather than held in memory.
pub const DEFAULT_LOG_QUEUE_LINES: usize = 4096;

/// How long the process waits at exit for queued lines to be written: the last lines
/// (why it stopped) matter, but a stalled stderr must not keep it from exiting.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(2);

/// Hands each log line to the writer thread without waiting.
#[derive(Clone)]
pub struct LogQueue {
    lines: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
    /// Lines queued and not yet written.
    pending: Arc<AtomicUsize>,
}

impl LogQueue {
    /// A queue of `capacity` lines whose writer thread writes them to `out`.
    pub fn start(capacity: usize, out: impl Write + Send + 'static) -> Self {
        let (lines, queued) = std::sync::mpsc::sync_channel(capacity);
        let queue = Self {
            lines,
            dropped: Default::default(),
            pending: Default::default(),
        };
        let (dropped, pending) = (queue.dropped.clone(), queue.pending.clone());
        std::thread::Builder::new()
            .name("wharf-log".into())
            .spawn(move || write_lines(queued, out, &dropped, &pending))
            .expect("spawn log writer thread");
        queue
    }

    /// Waits (bounded) until the lines queued so far are written; for the end of the
    /// process, whose other threads are about to vanish.
    pub fn flush_at_exit(&self) {
        let deadline = Instant::now() + FLUSH_AT_EXIT;
        while self.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn write_lines(
    queued: Receiver<Vec<u8>>,
    mut out: impl Write,
    dropped: &AtomicU64,
    pending: &AtomicUsize,
) {
    for line in queued {
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                out,
                "wharf: {lost} log lines dropped: the log output did not keep up"
            );
        }
        let _ = out.write_all(&line);
        pending.fetch_sub(1, Ordering::Release);
    }
}

impl<'a> MakeWriter<'a> for LogQueue {
    type Writer = QueuedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        QueuedLine {
            queue: self,
            line: Vec::new(),
        }
    }
}

/// One event's text, queued when the formatter is done with it.
pub struct QueuedLine<'a> {
    queue: &'a LogQueue,
    line: Vec<u8>,
}

impl Write for QueuedLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine<'_> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        self.queue.pending.fetch_add(1, Ordering::AcqRel);
        match self.queue.lines.try_send(std::mem::take(&mut self.line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queue.pending.fetch_sub(1, Ordering::AcqRel);
                self.queue.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An output that blocks until the test opens it, then collects what it gets.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        text: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, changed) = &*self.open;
            let _open = changed
                .wait_while(open.lock().unwrap(), |open| !*open)
                .unwrap();
            self.text.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_lines_instead_of_blocking_and_says_how_many() {
        let gate = Gate::default();
        let queue = LogQueue::start(2, gate.clone());
        // The writer blocks on its first line; two more fill the queue, the rest are dropped.
        for i in 0..10 {
            writeln!(queue.make_writer(), "line {i}").unwrap();
        }
        let (open, changed) = &*gate.open;
        *open.lock().unwrap() = true;
        changed.notify_all();
        // Once the queue has drained, lines get through again.
        queue.flush_at_exit();
        writeln!(queue.make_writer(), "after").unwrap();
        queue.flush_at_exit();
        let text = String::from_utf8(gate.text.lock().unwrap().clone()).unwrap();
        assert!(text.contains("log lines dropped"), "{text}");
        assert!(text.ends_with("after\n"), "{text}");
        let kept = text.lines().filter(|l| l.starts_with("line ")).count();
        let dropped: usize = text
            .split("wharf: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert_eq!(kept + dropped, 10, "{text}");
    }
}
