//! Monitoring: logging setup, and the admin listener with its health checks,
//! `/metrics`, the status page and what they read ([`live`], [`history`]).

pub mod admin;
pub mod history;
pub mod live;
pub mod track;

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Log lines waiting for the writer thread. A burst bigger than this (at typical line
/// sizes, a few hundred KiB) is dropped and counted rather than held in memory.
pub const DEFAULT_LOG_QUEUE_LINES: usize = 4096;

/// Bytes of log lines the writer thread gathers into one write.
const LOG_WRITE_BUFFER: usize = 64 * 1024;

/// How often a count of dropped lines is reported: often enough to explain a gap in
/// the log, rarely enough that a stalled output is not flooded with the reports.
const DROPPED_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Logs to stderr (stdout carries the listening line and app table), as text or JSON,
/// through a bounded queue to one writer thread: a slow or stalled stderr (a pipe
/// nobody reads, a full disk behind a journal) costs log lines, never serving.
/// `RUST_LOG` overrides the level; the default is `info`. Keep the returned guard until
/// the end: dropping it waits (bounded) for the last lines to be written.
pub fn init_logging(json: bool) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Buffered: the writer thread writes what piled up while it was off the CPU in one
    // system call, and flushes whenever it has caught up.
    let stderr = std::io::BufWriter::with_capacity(LOG_WRITE_BUFFER, std::io::stderr());
    let (out, guard) = lossy_writer(stderr);
    let dropped = out.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(out)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    let _ = DROPPED.set(dropped.clone());
    report_dropped_lines(dropped);
    guard
}

/// The process's log output's count of dropped lines: logging is the process's, not a
/// node's.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far (0 if the log was never set up, as in tests).
pub fn dropped_log_lines() -> u64 {
    DROPPED.get().map_or(0, |d| d.dropped_lines() as u64)
}

/// A writer that hands each line to a thread writing to `out`, dropping (and counting)
/// lines when that thread is [`DEFAULT_LOG_QUEUE_LINES`] behind.
fn lossy_writer(out: impl std::io::Write + Send + 'static) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(DEFAULT_LOG_QUEUE_LINES)
        .thread_name("wharf-log")
        .finish(out)
}

/// Says in the log, now and then, how many lines the log output lost since last said.
fn report_dropped_lines(dropped: ErrorCounter) {
    let report = move || {
        let mut said = 0;
        loop {
            std::thread::sleep(DROPPED_REPORT_EVERY);
            let total = dropped.dropped_lines();
            if total > said {
                tracing::warn!(
                    dropped = total - said,
                    "log lines dropped: the log output did not keep up"
                );
                said = total;
            }
        }
    };
    let spawned = std::thread::Builder::new()
        .name("wharf-log-drops".into())
        .spawn(report);
    if let Err(e) = spawned {
        tracing::warn!("dropped log lines will not be reported: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;

    /// An output that takes its first line and then never returns: a pipe nobody reads.
    struct Stalled(mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_lines_instead_of_blocking_and_counts_them() {
        let (release, stalled) = mpsc::channel();
        let (out, guard) = lossy_writer(Stalled(stalled));
        let counter = out.error_counter();
        let lines = DEFAULT_LOG_QUEUE_LINES * 2;
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let mut out = out;
            for i in 0..lines {
                writeln!(out, "line {i}").unwrap();
            }
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("writing to a stalled output blocked");
        let dropped = counter.dropped_lines();
        assert!(
            dropped >= lines - DEFAULT_LOG_QUEUE_LINES - 1,
            "only {dropped} of {lines} lines were dropped"
        );
        drop(release);
        drop(guard);
    }
}
