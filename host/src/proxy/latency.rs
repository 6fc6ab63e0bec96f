//! Peak-EWMA response time with a decaying penalty after failures. (Skeleton: the
//! selection helper fills it in.)

use std::time::{Duration, Instant};

/// One backend's recent response time, as `least_latency` weighs it. Shared by the
/// requests in flight (interior mutability; cheap to read on every pick).
#[derive(Debug, Default)]
pub struct Latency {}

impl Latency {
    /// A response head arrived `rtt` after the request was sent.
    pub fn observe(&self, rtt: Duration) {
        let _ = rtt;
        todo!()
    }

    /// A 5xx, a 429 or a connect failure: the backend costs more for a while, decaying;
    /// with `retry_after`, at least until then.
    pub fn penalize(&self, retry_after: Option<Duration>) {
        let _ = retry_after;
        todo!()
    }

    /// The estimate in seconds at `now`, penalty included.
    pub fn estimate(&self, now: Instant) -> f64 {
        let _ = now;
        todo!()
    }
}
