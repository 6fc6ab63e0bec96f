//! Requests per second per client address (GCRA), in bounded memory.

use crate::config::RateLimit;
use std::net::IpAddr;
use std::time::Duration;

/// One rate limit, kept per client address. IPv6 clients are counted per /64, the
/// smallest network one subscriber is given.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    capacity: usize,
}

impl RateLimiter {
    /// Remembers at most `capacity` addresses; past that, ones whose state no longer
    /// matters (their burst refilled) are forgotten first.
    pub fn new(_limit: RateLimit, _capacity: usize) -> Self {
        todo!("issue 15: rate limiter")
    }

    /// `Err(retry_after)`: over the limit; the client may try again after that long.
    pub fn check(&self, _client: IpAddr) -> Result<(), Duration> {
        todo!("issue 15: rate limiter")
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// The most addresses remembered.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Addresses remembered now.
    pub fn clients(&self) -> usize {
        todo!("issue 15: rate limiter")
    }
}
