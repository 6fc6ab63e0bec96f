//! Guest stdout/stderr, turned into log lines tagged with the app and request id.
//!
//! A guest's output is its own text in wharf's log, so it is bounded and defanged: at
//! most [`MAX_OUTPUT_PER_REQUEST`] bytes per stream and request are logged (the rest
//! is counted, and one line says how much was dropped), and control characters are
//! escaped so a guest cannot forge log lines or drive an operator's terminal. The log
//! itself never blocks the guest's thread (see `monitor::init_logging`).

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// A line longer than this is logged in pieces, so a guest cannot make wharf buffer
/// unbounded output.
const MAX_LINE: usize = 8 * 1024;

/// Bytes of one stream (stdout or stderr) logged per request; a guest printing in a
/// loop fills the log with this much per request, not more.
pub const MAX_OUTPUT_PER_REQUEST: usize = 64 * 1024;

#[derive(Clone)]
pub struct GuestLog {
    inner: Arc<Mutex<LineBuffer>>,
}

struct LineBuffer {
    app: Arc<str>,
    request_id: Arc<str>,
    stream: &'static str,
    pending: Vec<u8>,
    /// This request's bytes taken so far, and those dropped past the bound.
    taken: usize,
    dropped: u64,
}

impl GuestLog {
    pub fn new(app: Arc<str>, request_id: Arc<str>, stream: &'static str) -> Self {
        let inner = LineBuffer {
            app,
            request_id,
            stream,
            pending: Vec::new(),
            taken: 0,
            dropped: 0,
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// Ends the last request's output (partial line, dropped count) under its id, then
    /// tags later output with `id`, with a fresh bound.
    pub fn set_request_id(&self, id: Arc<str>) {
        let mut inner = self.inner.lock().unwrap();
        inner.finish();
        inner.request_id = id;
    }

    fn push(&self, bytes: &[u8]) {
        self.inner.lock().unwrap().push(bytes);
    }
}

impl LineBuffer {
    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_OUTPUT_PER_REQUEST - self.taken;
        let (mut bytes, over) = bytes.split_at(bytes.len().min(room));
        self.dropped += over.len() as u64;
        self.taken += bytes.len();
        while !bytes.is_empty() {
            let room = MAX_LINE - self.pending.len();
            match bytes[..bytes.len().min(room)]
                .iter()
                .position(|&b| b == b'\n')
            {
                Some(nl) => {
                    self.pending.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    self.emit();
                }
                None => {
                    let take = bytes.len().min(room);
                    self.pending.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.pending.len() == MAX_LINE {
                        self.emit();
                    }
                }
            }
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.pending);
        let line = escape_controls(line.strip_suffix('\r').unwrap_or(&line));
        tracing::info!(target: "guest", app = %self.app, request_id = %self.request_id, stream = self.stream, "{line}");
        self.pending.clear();
    }

    /// The end of a request's output: its partial line, and how much was dropped.
    fn finish(&mut self) {
        if !self.pending.is_empty() {
            self.emit();
        }
        if self.dropped > 0 {
            tracing::warn!(
                target: "guest", app = %self.app, request_id = %self.request_id, stream = self.stream,
                "guest output dropped: {} bytes past the limit of {MAX_OUTPUT_PER_REQUEST} bytes per request",
                self.dropped
            );
        }
        self.taken = 0;
        self.dropped = 0;
    }
}

/// `line` with every control character (ESC, CR, NUL...) written as its Rust escape
/// (`\u{1b}`, `\r`, `\u{0}`): no raw control character of a guest's reaches the log,
/// so it cannot end a line early or drive a terminal. (A guest printing the text
/// `\r` looks the same; the line still cannot pass for one of wharf's own.)
fn escape_controls(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(char::is_control) {
        return line.into();
    }
    let mut escaped = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        match c.is_control() {
            true => escaped.extend(c.escape_default()),
            false => escaped.push(c),
        }
    }
    escaped.into()
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        self.finish();
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
