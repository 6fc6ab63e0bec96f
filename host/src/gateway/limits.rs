//! `[limits]` as the gateway applies them to one request: what hyper's HTTP/1 parser
//! does not check in the head (the target's length against `max_uri_bytes`, the header
//! fields' bytes, names with `_`, HTTP/2 heads), a declared body over the limit, and
//! [`LimitedBody`] for what only shows while the body streams.

use super::GatewayError;
use crate::config::LimitsConfig;
use crate::http::Body;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Checks the head of `req` and its declared body length, before anything reads the
/// body: a refused `Expect: 100-continue` request so never gets its `100 Continue`
/// (hyper sends it on the first poll of the body).
pub fn check_head<B: hyper::body::Body>(
    req: &Request<B>,
    limits: &LimitsConfig,
) -> Result<(), GatewayError> {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if target > limits.max_uri_bytes {
        return Err(GatewayError::UriTooLong);
    }
    // hyper counts HTTP/1 fields itself (`max_headers`), but not HTTP/2 ones.
    if req.headers().len() > limits.max_headers {
        return Err(GatewayError::HeadersTooLarge);
    }
    // Each field as on the wire: name, ": ", value, CRLF.
    let bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge);
    }
    if !limits.allow_underscores_in_headers
        && req.headers().keys().any(|name| name.as_str().contains('_'))
    {
        return Err(GatewayError::BadRequest(
            "header names with an underscore are not accepted",
        ));
    }
    // hyper's size hint is the Content-Length it parsed.
    if req.body().size_hint().lower() > limits.max_body_bytes {
        return Err(GatewayError::BodyTooLarge);
    }
    Ok(())
}

/// Why a request body stopped short: the first of these is kept for the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyFault {
    #[error("the request body is larger than this server accepts")]
    TooLarge,
    #[error("the request body paused too long")]
    Idle,
    #[error("the request took too long to arrive")]
    Timeout,
    #[error("the request body is malformed")]
    Malformed,
}

impl From<BodyFault> for GatewayError {
    fn from(fault: BodyFault) -> Self {
        match fault {
            BodyFault::TooLarge => GatewayError::BodyTooLarge,
            BodyFault::Idle | BodyFault::Timeout => GatewayError::RequestTimeout,
            BodyFault::Malformed => GatewayError::BadRequest("the request body is malformed"),
        }
    }
}

/// What a guest reading the body is told.
impl From<BodyFault> for wasmtime_wasi_http::Error {
    fn from(fault: BodyFault) -> Self {
        match fault {
            BodyFault::TooLarge => wasmtime_wasi_http::Error::HttpRequestBodySize(None),
            BodyFault::Idle | BodyFault::Timeout => {
                wasmtime_wasi_http::Error::ConnectionReadTimeout
            }
            BodyFault::Malformed => wasmtime_wasi_http::Error::HttpProtocolError,
        }
    }
}

/// `req` with its body under `limits`, and what the gateway reads the outcome from.
pub fn limit_body<B>(req: Request<B>, limits: &LimitsConfig) -> (Request<LimitedBody<B>>, Watch) {
    let fault = Arc::new(Watched::default());
    let req = req.map(|inner| LimitedBody {
        inner,
        read: 0,
        max: limits.max_body_bytes,
        idle_timeout: limits.body_idle_timeout,
        idle: Box::pin(tokio::time::sleep(limits.body_idle_timeout)),
        waiting: false,
        // From when the gateway has the head: hyper's header read timeout covers it.
        deadline: Box::pin(tokio::time::sleep(limits.request_timeout)),
        watched: fault.clone(),
    });
    (req, Watch(fault))
}

/// The gateway's side of a [`LimitedBody`].
#[derive(Clone)]
pub struct Watch(Arc<Watched>);

/// What a [`LimitedBody`] tells the gateway.
#[derive(Default)]
struct Watched {
    fault: OnceLock<BodyFault>,
    /// Body bytes read so far, for the access log.
    read: AtomicU64,
}

impl Watch {
    /// How many bytes of the body have been read.
    pub fn bytes_read(&self) -> u64 {
        self.0.read.load(Ordering::Relaxed)
    }

    /// The target's answer, unless the body broke a limit: then the target saw a
    /// failed read (and likely answered 500 or 502), and the client is told why.
    pub fn answer(
        &self,
        answer: Result<Response<Body>, GatewayError>,
    ) -> Result<Response<Body>, GatewayError> {
        match self.0.fault.get() {
            Some(fault) => Err((*fault).into()),
            None => answer,
        }
    }
}

/// A request body that fails, and records why, once it grows past `max_body_bytes`,
/// pauses longer than `body_idle_timeout`, is still arriving at `request_timeout`, or
/// is malformed (a bad chunk size).
pub struct LimitedBody<B> {
    inner: B,
    read: u64,
    max: u64,
    idle_timeout: Duration,
    /// Runs while the reader waits on the client, from the first wait after data.
    idle: Pin<Box<Sleep>>,
    waiting: bool,
    deadline: Pin<Box<Sleep>>,
    watched: Arc<Watched>,
}

impl<B> LimitedBody<B> {
    fn fail(&mut self, fault: BodyFault) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        let fault = *self.watched.fault.get_or_init(|| fault);
        Poll::Ready(Some(Err(fault)))
    }
}

impl<B> hyper::body::Body for LimitedBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = BodyFault;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        let this = self.get_mut();
        if let Some(fault) = this.watched.fault.get() {
            return Poll::Ready(Some(Err(*fault)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return this.fail(BodyFault::Timeout);
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let until = Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(until);
                }
                ready!(this.idle.as_mut().poll(cx));
                return this.fail(BodyFault::Idle);
            }
            Poll::Ready(frame) => frame,
        };
        this.waiting = false;
        match frame {
            None => Poll::Ready(None),
            Some(Err(e)) => {
                tracing::debug!("request body: {e}");
                this.fail(BodyFault::Malformed)
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    this.watched.read.store(this.read, Ordering::Relaxed);
                    if this.read > this.max {
                        return this.fail(BodyFault::TooLarge);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tokio::sync::mpsc;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_body_bytes: 10,
            max_uri_bytes: 32,
            max_headers: 3,
            max_header_bytes: 64,
            body_idle_timeout: Duration::from_millis(200),
            request_timeout: Duration::from_millis(600),
            ..LimitsConfig::default()
        }
    }

    fn request(uri: &str, headers: &[(&str, &str)], body: &'static str) -> Request<Full<Bytes>> {
        let mut req = Request::builder().uri(uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    fn status(result: Result<(), GatewayError>) -> u16 {
        result.map_or_else(|e| e.status().as_u16(), |()| 200)
    }

    /// A body the test feeds, as a client's arrives: chunks or an error, then the end
    /// when the sender is dropped.
    struct Fed(mpsc::UnboundedReceiver<Result<&'static str, &'static str>>);

    impl hyper::body::Body for Fed {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            self.0
                .poll_recv(cx)
                .map(|next| next.map(|r| r.map(|s| Frame::data(Bytes::from_static(s.as_bytes())))))
        }
    }

    fn fed(
        items: &[Result<&'static str, &'static str>],
    ) -> (
        mpsc::UnboundedSender<Result<&'static str, &'static str>>,
        Request<Fed>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        for item in items {
            tx.send(*item).unwrap();
        }
        (tx, Request::new(Fed(rx)))
    }

    #[test]
    fn a_head_within_every_limit_passes() {
        let req = request("/a?b=c", &[("host", "x"), ("accept", "*/*")], "0123456789");
        assert_eq!(status(check_head(&req, &limits())), 200);
    }

    #[test]
    fn a_target_past_max_uri_bytes_is_414() {
        let req = request(&format!("/{}", "a".repeat(32)), &[], "");
        assert_eq!(status(check_head(&req, &limits())), 414);
    }

    #[test]
    fn too_many_fields_or_too_many_field_bytes_are_431() {
        let many = [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")];
        assert_eq!(status(check_head(&request("/", &many, ""), &limits())), 431);
        let big = "v".repeat(60);
        let req = request("/", &[("cookie", big.as_str())], "");
        assert_eq!(status(check_head(&req, &limits())), 431);
    }

    #[test]
    fn a_header_name_with_an_underscore_is_400_unless_allowed() {
        let req = request("/", &[("x_user", "admin")], "");
        assert_eq!(status(check_head(&req, &limits())), 400);
        let allowed = LimitsConfig {
            allow_underscores_in_headers: true,
            ..limits()
        };
        assert_eq!(status(check_head(&req, &allowed)), 200);
    }

    #[test]
    fn a_declared_body_over_the_limit_is_413_before_it_is_read() {
        let req = request("/", &[], "0123456789a");
        assert_eq!(status(check_head(&req, &limits())), 413);
    }

    #[tokio::test]
    async fn a_streamed_body_growing_past_the_limit_fails_and_is_answered_413() {
        let (_tx, req) = fed(&[Ok("012345"), Ok("6789"), Ok("a")]);
        let (req, watch) = limit_body(req, &limits());
        let read = req.into_body().collect().await;
        assert_eq!(read.err(), Some(BodyFault::TooLarge));
        let answer = watch.answer(Err(GatewayError::NotFound));
        assert_eq!(answer.unwrap_err().status().as_u16(), 413);
    }

    #[tokio::test]
    async fn a_body_within_the_limit_reads_whole_and_keeps_the_answer() {
        let (req, watch) = limit_body(request("/", &[], "0123456789"), &limits());
        let read = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&read[..], b"0123456789");
        let answer = watch.answer(Err(GatewayError::NotFound));
        assert_eq!(answer.unwrap_err().status().as_u16(), 404);
    }

    #[tokio::test]
    async fn a_body_pausing_past_the_idle_timeout_is_answered_408() {
        let (_tx, req) = fed(&[Ok("0123")]);
        let (req, watch) = limit_body(req, &limits());
        let read = req.into_body().collect().await;
        assert_eq!(read.err(), Some(BodyFault::Idle));
        let answer = watch.answer(Err(GatewayError::NotFound));
        assert_eq!(answer.unwrap_err().status().as_u16(), 408);
    }

    #[tokio::test]
    async fn a_body_still_trickling_at_the_request_timeout_is_answered_408() {
        let (tx, req) = fed(&[]);
        // A chunk every 20 ms never trips the idle timeout; the whole request's does.
        tokio::spawn(async move {
            for _ in 0..500 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if tx.send(Ok("")).is_err() {
                    return;
                }
            }
        });
        let (req, watch) = limit_body(req, &limits());
        let read = req.into_body().collect().await;
        assert_eq!(read.err(), Some(BodyFault::Timeout));
        let answer = watch.answer(Err(GatewayError::NotFound));
        assert_eq!(answer.unwrap_err().status().as_u16(), 408);
    }

    #[tokio::test]
    async fn a_body_hyper_could_not_decode_is_answered_400() {
        let (_tx, req) = fed(&[Ok("01"), Err("invalid chunk size")]);
        let (req, watch) = limit_body(req, &limits());
        assert_eq!(
            req.into_body().collect().await.err(),
            Some(BodyFault::Malformed)
        );
        let answer = watch.answer(Ok(Response::new(Body::default())));
        assert_eq!(answer.unwrap_err().status().as_u16(), 400);
    }
}
