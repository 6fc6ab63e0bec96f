//! Requests per second per client address (GCRA), in bounded memory.
//!
//! The arithmetic is governor's; the state is ours: a sharded table that remembers at
//! most `capacity` addresses, so a flood of distinct (spoofed, or IPv6) addresses costs
//! a fixed amount of memory and each request locks one shard only.

use crate::config::RateLimit;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{NotUntil, Quota};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One rate limit, kept per client address. IPv6 clients are counted per /64, the
/// smallest network one subscriber is given.
#[derive(Debug)]
pub struct RateLimiter<C: Clock = DefaultClock> {
    limit: RateLimit,
    capacity: usize,
    gcra: governor::RateLimiter<Key, Shared<C>, C, NoOpMiddleware<C::Instant>>,
    /// The same table as governor's, for counting.
    table: Arc<Table<C>>,
}

impl RateLimiter {
    /// Remembers at most `capacity` addresses; past that, ones whose state no longer
    /// matters (their burst refilled) are forgotten first.
    pub fn new(limit: RateLimit, capacity: usize) -> Self {
        Self::with_clock(limit, capacity, DefaultClock::default())
    }

    /// `previous` if it enforces the same limit over the same capacity (its clients keep
    /// what they have used), else a new limiter.
    pub fn reuse(previous: Option<&Arc<Self>>, limit: RateLimit, capacity: usize) -> Arc<Self> {
        match previous {
            Some(rate) if rate.limit == limit && rate.capacity == capacity => rate.clone(),
            _ => Arc::new(Self::new(limit, capacity)),
        }
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    fn with_clock(limit: RateLimit, capacity: usize, clock: C) -> Self {
        let period = Duration::from_secs_f64(1.0 / limit.per_second).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(limit.burst()).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .expect("the period is at least 1ns")
            .allow_burst(burst);
        // The table's clock starts before governor's, so its "now" is never earlier than
        // the one governor measures states by: what it sees as past is past.
        let table = Arc::new(Table::new(capacity, clock.clone()));
        Self {
            limit,
            capacity,
            gcra: governor::RateLimiter::new(quota, Shared(table.clone()), clock),
            table,
        }
    }

    /// `Err(retry_after)`: over the limit; the client may try again after that long.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.gcra
            .check_key(&Key::of(client))
            .map_err(|refused: NotUntil<C::Instant>| {
                refused.wait_time_from(self.gcra.clock().now())
            })
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
        self.table.len()
    }
}

/// What one client is counted by: its IPv4 address, or its IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    V6(u64),
}

impl Key {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Key::V4(v4.to_bits()),
            IpAddr::V6(v6) => Key::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

/// Each client's theoretical arrival time (governor's state), in shards of bounded size.
#[derive(Debug)]
struct Table<C: Clock> {
    shards: Box<[Mutex<HashMap<Key, Nanos>>]>,
    /// Chooses the shard; independent of the maps' own hashers, which would otherwise
    /// see only keys agreeing in the bits that chose their shard.
    pick: RandomState,
    per_shard: usize,
    clock: C,
    start: C::Instant,
}

/// Enough shards that cores rarely wait on one another, each of at least
/// [`SHARD_CLIENTS`] so that small tables are one shard and evict by one order.
const SHARDS: usize = 16;
const SHARD_CLIENTS: usize = 1024;

impl<C: Clock> Table<C> {
    fn new(capacity: usize, clock: C) -> Self {
        let shards = (capacity / SHARD_CLIENTS).clamp(1, SHARDS);
        Self {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            pick: RandomState::new(),
            per_shard: (capacity / shards).max(1),
            start: clock.now(),
            clock,
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Room for one more in a full shard. States whose arrival time has passed go
    /// first: they are what a new client starts from, so forgetting them changes
    /// nothing. If the shard is still nearly full, every client in it is mid-burst;
    /// then the eighth nearest to refilled are forgotten (each may get a little more
    /// than its burst), as HAProxy's stick tables evict, rather than refusing every new
    /// client as nginx's full limit_req zone does: when someone floods the table with
    /// addresses, a loose limit for a few beats locking out everyone not yet seen.
    /// Evicting an eighth at once keeps the scan cheap per request under such a flood.
    fn make_room(&self, shard: &mut HashMap<Key, Nanos>) {
        let now = self.clock.now().duration_since(self.start);
        shard.retain(|_, tat| *tat > now);
        let keep = self.per_shard - self.per_shard.div_ceil(8);
        if shard.len() > keep {
            let excess = shard.len() - keep;
            let mut by_age: Vec<(Nanos, Key)> = shard.iter().map(|(k, t)| (*t, *k)).collect();
            by_age.select_nth_unstable_by_key(excess - 1, |(tat, _)| *tat);
            for (_, key) in &by_age[..excess] {
                shard.remove(key);
            }
        }
    }
}

/// The table as governor holds it, shared with the limiter that counts it.
#[derive(Debug)]
struct Shared<C: Clock>(Arc<Table<C>>);

impl<C: Clock> StateStore for Shared<C> {
    type Key = Key;

    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl<C: Clock> Table<C> {
    fn measure_and_replace<T, F, E>(&self, key: &Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let index = self.pick.hash_one(key) as usize % self.shards.len();
        let mut shard = lock(&self.shards[index]);
        let (answer, tat) = f(shard.get(key).copied())?;
        if !shard.contains_key(key) && shard.len() >= self.per_shard {
            self.make_room(&mut shard);
        }
        shard.insert(*key, tat);
        Ok(answer)
    }
}

/// A shard whose holder panicked is still a valid table (every write is one insert).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(per_second: f64, burst: u32, capacity: usize) -> RateLimiter<FakeRelativeClock> {
        let limit = RateLimit {
            per_second,
            burst: Some(burst),
        };
        RateLimiter::with_clock(limit, capacity, FakeRelativeClock::default())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_burst_then_is_refused_until_the_next_request_refills() {
        let limiter = limiter(10.0, 3, 100);
        let client = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(limiter.check(client), Ok(()));
        }
        assert_eq!(limiter.check(client), Err(Duration::from_millis(100)));
        limiter.gcra.clock().advance(Duration::from_millis(60));
        assert_eq!(limiter.check(client), Err(Duration::from_millis(40)));
        limiter.gcra.clock().advance(Duration::from_millis(40));
        assert_eq!(limiter.check(client), Ok(()));
        assert!(limiter.check(client).is_err());
        // Another client has its own burst.
        assert_eq!(limiter.check(ip("192.0.2.2")), Ok(()));
    }

    #[test]
    fn ipv6_clients_in_one_64_share_a_limit_and_other_64s_do_not() {
        let limiter = limiter(1.0, 1, 100);
        assert_eq!(limiter.check(ip("2001:db8:0:1::1")), Ok(()));
        assert!(limiter.check(ip("2001:db8:0:1:ffff::2")).is_err());
        assert_eq!(limiter.check(ip("2001:db8:0:2::1")), Ok(()));
        // An IPv4 client on a dual-stack socket is the IPv4 client.
        assert_eq!(limiter.check(ip("192.0.2.9")), Ok(()));
        assert!(limiter.check(ip("::ffff:192.0.2.9")).is_err());
    }

    #[test]
    fn a_flood_of_distinct_addresses_never_grows_the_table_past_its_capacity() {
        let capacity = 100_000;
        let limiter = limiter(1.0, 5, capacity);
        let mut most = 0;
        for i in 0..300_000u32 {
            let client = IpAddr::V4((0x0a00_0000 + i).into());
            assert_eq!(limiter.check(client), Ok(()), "a new client has its burst");
            if i % 1000 == 0 {
                most = most.max(limiter.clients());
            }
        }
        most = most.max(limiter.clients());
        assert!(most <= capacity, "{most} remembered");
        assert!(most > capacity / 2, "{most}: the table is used");
        // Each remembered address is a key and a time in a hash map: 24 bytes and a
        // control byte per slot, at least 7/8 of the slots used.
        let bytes = limiter
            .table
            .shards
            .iter()
            .map(|s| lock(s).capacity() * (size_of::<(Key, Nanos)>() + 1) * 8 / 7);
        let bytes: usize = bytes.sum();
        assert!(
            bytes < 8 << 20,
            "about {bytes} bytes for {capacity} clients"
        );
    }

    #[test]
    fn a_full_table_forgets_refilled_clients_then_those_nearest_to_refilled() {
        let limiter = limiter(1.0, 5, 16);
        let clock = limiter.gcra.clock().clone();
        let busy = ip("192.0.2.1");
        let others = |from: u32| (from..from + 15).map(|i| IpAddr::V4((0x0a00_0000 + i).into()));
        for _ in 0..5 {
            assert_eq!(limiter.check(busy), Ok(()));
        }
        // Fifteen more fill the table; each owes a second, the busy client five.
        others(0).for_each(|c| assert_eq!(limiter.check(c), Ok(())));
        assert_eq!(limiter.clients(), 16);
        // A newcomer while all are mid-burst: two of the fifteen make room.
        assert_eq!(limiter.check(ip("192.0.2.2")), Ok(()));
        assert_eq!(limiter.clients(), 15);
        assert!(
            limiter.check(busy).is_err(),
            "the busy client is remembered"
        );
        // Two seconds on, the fifteen have refilled and go first; the busy client has
        // two requests back, not a fresh burst of five.
        clock.advance(Duration::from_secs(2));
        others(100).for_each(|c| assert_eq!(limiter.check(c), Ok(())));
        assert!(limiter.clients() <= 16);
        assert_eq!(limiter.check(busy), Ok(()));
        assert_eq!(limiter.check(busy), Ok(()));
        assert!(limiter.check(busy).is_err());
    }
}
