//! Which backend gets a request: a trait, one type per algorithm, plus the rules for
//! which backends are eligible at all. Pure: no I/O, no clocks but the ones passed in.
//! (Skeleton: the selection helper fills it in.)

use crate::config::Algorithm;
use std::time::{Duration, Instant};

/// What an algorithm sees of one eligible backend.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// The backend's place in its pool (stable for the pool's life).
    pub index: usize,
    /// Configured weight × slow-start factor, > 0.
    pub weight: f64,
    /// Requests in flight to it now.
    pub in_flight: u32,
    /// [`super::latency::Latency::estimate`] now, in seconds.
    pub latency: f64,
    /// A hash of its address: hashing's identity for it, the same in every pool
    /// generation.
    pub id: u64,
}

/// An algorithm. `key` is the request's hash key (`hash` only; `None` for the others,
/// or when the request has no such header or cookie: then any backend will do).
pub trait Select: Send + Sync {
    /// The `index` of the chosen candidate; `None` only when `candidates` is empty.
    fn pick(&self, candidates: &[Candidate], key: Option<u64>) -> Option<usize>;
}

/// The algorithm `algorithm` names, for a pool of `pool_size` backends.
pub fn for_algorithm(algorithm: &Algorithm, pool_size: usize) -> Box<dyn Select> {
    let _ = (algorithm, pool_size);
    todo!()
}

/// The share of its weight a backend that came back `up_for` ago gets, over a slow
/// start of `window`: rises from a small floor to 1.0.
pub fn slow_start_factor(up_for: Duration, window: Duration) -> f64 {
    let _ = (up_for, window);
    todo!()
}

/// What the pool knows of one backend when choosing who may get requests.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub backup: bool,
    /// Active checks pass (or there are none) and it is not ejected or drained.
    pub healthy: bool,
    /// Drained by the operator: never picked, not even in panic.
    pub drained: bool,
}

/// Which backends may get the next request (indices into `standings`): the healthy
/// primaries; with fewer than `panic_threshold` of the primaries healthy, every
/// primary that is not drained (panic: spread rather than overload the survivors);
/// with no primary healthy, the healthy backups; otherwise none.
pub fn eligible(standings: &[Standing], panic_threshold: f64) -> Eligible {
    let _ = (standings, panic_threshold);
    todo!()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligible {
    pub indices: Vec<usize>,
    pub panic: bool,
}

#[allow(dead_code)]
fn _now() -> Instant {
    Instant::now()
}
