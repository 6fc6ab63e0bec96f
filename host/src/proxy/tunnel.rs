//! Upgraded connections (WebSocket and the like) passed through both ways, with their
//! own idle timeout.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Once both sides have switched protocols, copies bytes both ways until either side
/// closes or nothing moves for `idle`; `guard` (the request's in-flight count) is
/// dropped when the tunnel closes, so a draining backend waits for its tunnels.
pub fn spawn(client: OnUpgrade, backend: OnUpgrade, idle: Duration, guard: impl Send + 'static) {
    tokio::spawn(async move {
        let _guard = guard;
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!("no tunnel, a side did not switch protocols: {e}");
                return;
            }
        };
        let activity = Arc::new(Activity::new());
        let mut client = Watched::new(TokioIo::new(client), &activity);
        let mut backend = Watched::new(TokioIo::new(backend), &activity);
        // A side's end is passed on as a half close; the tunnel ends when both have
        // ended, or when one fails. Dropping both sockets then closes them.
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => {
                if let Err(e) = copied {
                    tracing::debug!("tunnel closed: {e}");
                }
            }
            () = activity.idle_for(idle) => {
                tracing::debug!("tunnel closed: nothing moved for {} ms", idle.as_millis());
            }
        }
    });
}

/// When bytes last moved either way.
struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// Returns once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            if last.elapsed() >= idle {
                return;
            }
            tokio::time::sleep_until(last + idle).await;
        }
    }
}

/// A socket that records in [`Activity`] each time bytes move.
struct Watched<T> {
    io: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    fn new(io: T, activity: &Arc<Activity>) -> Self {
        Watched {
            io,
            activity: activity.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        // A slow reader taking bytes is movement too.
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
