//! When a retry is safe, and the budget that caps retries.
//!
//! A request may go to a second backend only if the first cannot have acted on it (no
//! connection was made) or if acting twice is harmless (an idempotent method) and the
//! body can be sent again. So bodies of idempotent requests up to [`REPLAY_LIMIT`] are
//! kept; anything larger, or of unknown length, streams through once, as nginx does
//! with `proxy_request_buffering off`: a 1 GiB upload never sits in memory.
//!
//! The budget bounds retries in flight to a share of the pool's requests in flight
//! (Linkerd's and tower's retry budget, as a concurrency cap): when every backend
//! fails, retries cannot multiply the load on a dying pool.

use crate::http::{Body, BoxError};
use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full, Limited};
use std::sync::atomic::{AtomicU32, Ordering};

/// The largest request body kept to be sent again.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// Methods whose effect is the same sent once or twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A request body as the forward loop holds it.
pub enum RequestBody {
    /// Read whole: can go to as many backends as the retry rules allow.
    Replayable(Bytes),
    /// Streams through once (`None` once sent); another backend can have it only if
    /// the first never read it: a connect failure hands the request back.
    Once(Option<Body>),
}

impl RequestBody {
    /// Keeps `body` for replay when `replayable` (the request is idempotent) and it
    /// declares at most [`REPLAY_LIMIT`] bytes; the read is capped there all the same,
    /// so a body longer than it declared is an error, not a big buffer.
    pub async fn new<B>(body: B, replayable: bool) -> Result<Self, BoxError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let fits = body
            .size_hint()
            .upper()
            .is_some_and(|upper| upper <= REPLAY_LIMIT as u64);
        if !(replayable && fits) {
            return Ok(Self::Once(Some(body.map_err(Into::into).boxed_unsync())));
        }
        let collected = Limited::new(body, REPLAY_LIMIT).collect().await?;
        Ok(Self::Replayable(collected.to_bytes()))
    }

    /// The body for the next attempt, if there can be one: a copy of a kept body, or
    /// the streaming body the first time.
    pub fn take(&mut self) -> Option<Body> {
        match self {
            Self::Replayable(bytes) => Some(full(bytes.clone())),
            Self::Once(body) => body.take(),
        }
    }

    pub fn is_replayable(&self) -> bool {
        matches!(self, Self::Replayable(_))
    }
}

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|e| match e {}).boxed_unsync()
}

/// Retries in flight, capped at `max(min, percent% of the requests in flight)`.
#[derive(Debug)]
pub struct Budget {
    retries: AtomicU32,
    percent: u32,
    min: u32,
}

/// One retry in flight; gives its place back when dropped.
#[derive(Debug)]
pub struct Permit<'a>(&'a Budget);

impl Budget {
    pub fn new(percent: u32, min: u32) -> Self {
        Self {
            retries: AtomicU32::new(0),
            percent,
            min,
        }
    }

    /// How many retries may be in flight alongside `requests` requests.
    pub fn cap(&self, requests: u32) -> u32 {
        let share = u64::from(requests) * u64::from(self.percent) / 100;
        self.min.max(u32::try_from(share).unwrap_or(u32::MAX))
    }

    /// A place for one more retry, unless `cap(requests)` are in flight already.
    pub fn try_acquire(&self, requests: u32) -> Option<Permit<'_>> {
        let cap = self.cap(requests);
        self.retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self))
    }

    pub fn in_flight(&self) -> u32 {
        self.retries.load(Ordering::Acquire)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;

    #[test]
    fn only_methods_that_may_be_repeated_are_idempotent() {
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(&method.parse().unwrap()), "{method}");
        }
        for method in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!is_idempotent(&method.parse().unwrap()), "{method}");
        }
    }

    #[test]
    fn the_budget_allows_the_minimum_with_few_requests_and_a_share_with_many() {
        let budget = Budget::new(20, 3);
        assert_eq!(budget.cap(0), 3);
        assert_eq!(budget.cap(10), 3);
        assert_eq!(budget.cap(15), 3);
        assert_eq!(budget.cap(20), 4);
        assert_eq!(budget.cap(1000), 200);
        assert_eq!(Budget::new(100, 0).cap(u32::MAX), u32::MAX);
    }

    #[test]
    fn a_permit_is_refused_at_the_cap_and_given_back_when_dropped() {
        let budget = Budget::new(20, 3);
        let permits: Vec<_> = (0..3).map(|_| budget.try_acquire(10).unwrap()).collect();
        assert!(budget.try_acquire(10).is_none());
        assert_eq!(budget.in_flight(), 3);
        // More requests in flight make room for more retries.
        let fourth = budget.try_acquire(20).unwrap();
        assert!(budget.try_acquire(20).is_none());
        drop(permits);
        drop(fourth);
        assert_eq!(budget.in_flight(), 0);
        assert!(budget.try_acquire(0).is_some());
    }

    #[test]
    fn a_budget_of_nothing_allows_no_retry() {
        assert!(Budget::new(0, 0).try_acquire(100).is_none());
    }

    #[tokio::test]
    async fn a_small_body_of_an_idempotent_request_is_kept_for_every_attempt() {
        let mut body = RequestBody::new(Full::new(Bytes::from("hello")), true)
            .await
            .unwrap();
        for _ in 0..3 {
            let sent = body.take().unwrap().collect().await.unwrap().to_bytes();
            assert_eq!(sent, "hello");
        }
    }

    #[tokio::test]
    async fn a_body_is_sent_once_when_not_idempotent_too_large_or_of_unknown_length() {
        let large = Full::new(Bytes::from(vec![b'x'; REPLAY_LIMIT + 1]));
        let chunked = UnknownLength(Full::new(Bytes::from("ab")));
        let cases = [
            RequestBody::new(Full::new(Bytes::from("post")), false)
                .await
                .unwrap(),
            RequestBody::new(large, true).await.unwrap(),
            RequestBody::new(chunked, true).await.unwrap(),
        ];
        for mut body in cases {
            assert!(!body.is_replayable());
            assert!(body.take().is_some());
            assert!(body.take().is_none());
        }
        let mut empty = RequestBody::new(Empty::<Bytes>::new(), true).await.unwrap();
        assert!(empty.take().is_some() && empty.take().is_some());
    }

    /// A body of unknown length, as a chunked upload is.
    struct UnknownLength(Full<Bytes>);

    impl hyper::body::Body for UnknownLength {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::pin::Pin::new(&mut self.0).poll_frame(cx)
        }
    }
}
