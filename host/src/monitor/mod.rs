//! Logging setup and the admin listener's health checks. Metrics and the status page
//! come later.

pub mod admin;
mod log_queue;

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Logs to stderr (stdout carries the listening line and app table), as text or JSON,
/// through a bounded queue: a stalled stderr costs log lines, never serving.
/// `RUST_LOG` overrides the level; the default is `info`. Keep the returned guard until
/// the end: dropping it waits (bounded) for the last lines to be written.
pub fn init_logging(json: bool) -> LogFlush {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let out = log_queue::LogQueue::start(log_queue::DEFAULT_LOG_QUEUE_LINES, std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(out.clone())
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    LogFlush(out)
}

/// Writes what is still queued when dropped, at the end of the process.
pub struct LogFlush(log_queue::LogQueue);

impl Drop for LogFlush {
    fn drop(&mut self) {
        self.0.flush_at_exit();
    }
}
