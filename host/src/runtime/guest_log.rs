//! Guest stdout/stderr, turned into log lines tagged with the app and request id.

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

#[derive(Clone)]
pub struct GuestLog {
    inner: Arc<Mutex<LineBuffer>>,
}

struct LineBuffer {
    app: Arc<str>,
    request_id: Arc<str>,
    stream: &'static str,
    pending: Vec<u8>,
}

impl GuestLog {
    pub fn new(app: Arc<str>, request_id: Arc<str>, stream: &'static str) -> Self {
        let inner = LineBuffer {
            app,
            request_id,
            stream,
            pending: Vec::new(),
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// Flushes any partial line under the old id, then tags later output with `id`.
    pub fn set_request_id(&self, id: Arc<str>) {
        let mut inner = self.inner.lock().unwrap();
        if !inner.pending.is_empty() {
            inner.emit();
        }
        inner.request_id = id;
    }

    fn push(&self, bytes: &[u8]) {
        self.inner.lock().unwrap().push(bytes);
    }
}

impl LineBuffer {
    fn push(&mut self, mut bytes: &[u8]) {
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
        let line = line.strip_suffix('\r').unwrap_or(&line);
        tracing::info!(target: "guest", app = %self.app, request_id = %self.request_id, stream = self.stream, "{line}");
        self.pending.clear();
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.emit();
        }
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
