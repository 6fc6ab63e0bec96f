//! Which backend gets a request: a trait, one type per algorithm, plus the rules for
//! which backends are eligible at all. Pure: no I/O and no clocks (the pool passes
//! in what time has done: slow-start weights, latency estimates).
//!
//! - [`RoundRobin`]: nginx's smooth weighted round robin; exact shares, interleaved.
//! - [`LeastConnections`] and [`LeastLatency`]: power of two choices (two candidates
//!   drawn at random, the cheaper wins). Comparing two rather than scanning all keeps
//!   a momentarily cheapest backend from getting every request at once, and costs the
//!   same for any pool size.
//! - [`Hash`]: weighted rendezvous hashing; removing a backend moves only its keys,
//!   and a weight that grows (slow start) only draws keys to that backend.

use crate::config::Algorithm;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::new(pool_size)),
        Algorithm::LeastConnections => Box::new(LeastConnections { rng: Rng::random() }),
        Algorithm::LeastLatency => Box::new(LeastLatency { rng: Rng::random() }),
        Algorithm::Hash(_) => Box::new(Hash {
            without_key: RoundRobin::new(pool_size),
        }),
    }
}

/// Smooth weighted round robin, as nginx does it: on every pick each candidate's
/// `current` grows by its weight, the largest wins and drops by the candidates' total.
/// Each gets exactly its share of a cycle, spread out (5:1:1 → a a b a c a a).
/// A backend missing from the candidates (down, ejected) keeps its `current` until
/// it is back; the others carry on where they were.
pub struct RoundRobin {
    /// By pool index.
    current: Mutex<Vec<i64>>,
}

/// Weights are fractional (slow start scales them); the algorithm wants integers.
/// In thousandths, a weight of 1 at the slow-start floor is still 100 units, and the
/// largest (1000 × 1000 per backend) leaves `current` far inside i64.
const WEIGHT_UNITS: f64 = 1000.0;

impl RoundRobin {
    fn new(pool_size: usize) -> Self {
        RoundRobin {
            current: Mutex::new(vec![0; pool_size]),
        }
    }
}

impl Select for RoundRobin {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> Option<usize> {
        let mut current = self.current.lock().unwrap();
        let mut total = 0;
        let mut best: Option<usize> = None;
        for c in candidates {
            let weight = (c.weight * WEIGHT_UNITS).round().max(1.0) as i64;
            current[c.index] += weight;
            total += weight;
            // Strictly greater: ties go to the earlier candidate, as in nginx.
            if best.is_none_or(|b| current[c.index] > current[b]) {
                best = Some(c.index);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }
}

/// Power of two choices on `(in_flight + 1) / weight`: fewer requests in flight wins,
/// and of two equally busy backends the heavier one.
pub struct LeastConnections {
    rng: Rng,
}

impl Select for LeastConnections {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> Option<usize> {
        power_of_two(&self.rng, candidates, |c| {
            (f64::from(c.in_flight) + 1.0) / c.weight
        })
    }
}

/// Power of two choices on `latency × (in_flight + 1) / weight`: the expected wait
/// behind the requests already there, per unit of weight.
pub struct LeastLatency {
    rng: Rng,
}

impl Select for LeastLatency {
    fn pick(&self, candidates: &[Candidate], _key: Option<u64>) -> Option<usize> {
        power_of_two(&self.rng, candidates, |c| {
            c.latency * (f64::from(c.in_flight) + 1.0) / c.weight
        })
    }
}

/// Two distinct candidates at random, the cheaper one (the first drawn on a tie).
fn power_of_two(
    rng: &Rng,
    candidates: &[Candidate],
    cost: impl Fn(&Candidate) -> f64,
) -> Option<usize> {
    match candidates {
        [] => None,
        [only] => Some(only.index),
        _ => {
            let n = candidates.len() as u64;
            let first = rng.below(n);
            let second = (first + 1 + rng.below(n - 1)) % n;
            let (a, b) = (&candidates[first as usize], &candidates[second as usize]);
            Some(if cost(b) < cost(a) { b.index } else { a.index })
        }
    }
}

/// Weighted rendezvous hashing: every candidate scores `-weight / ln(u)`, `u` uniform
/// in (0, 1) from the key and the candidate's id, and the highest wins. A key's scores
/// do not depend on the other candidates, so removing one moves only the keys it
/// held, and each gets keys in proportion to its weight. A request without a key
/// goes round robin.
pub struct Hash {
    without_key: RoundRobin,
}

impl Select for Hash {
    fn pick(&self, candidates: &[Candidate], key: Option<u64>) -> Option<usize> {
        let Some(key) = key else {
            return self.without_key.pick(candidates, None);
        };
        let score = |c: &Candidate| {
            let bits = splitmix(key ^ splitmix(c.id)) >> 11;
            // The top 53 bits, offset by half a step: in (0, 1), so ln(u) < 0.
            let u = (bits as f64 + 0.5) / (1u64 << 53) as f64;
            -c.weight / u.ln()
        };
        candidates
            .iter()
            .map(|c| (score(c), c.index))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, index)| index)
    }
}

/// The splitmix64 increment.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// One splitmix64 step: a fast mixer whose output bits each depend on every input bit.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Randomness for power of two choices: splitmix64 over an atomic counter, so picks
/// on many threads take no lock, and a seed makes tests repeatable.
struct Rng(AtomicU64);

impl Rng {
    fn seeded(seed: u64) -> Self {
        Rng(AtomicU64::new(seed))
    }

    /// Seeded from std's per-process random keys.
    fn random() -> Self {
        Rng::seeded(RandomState::new().hash_one(()))
    }

    /// In `0..n`; the bias of `%` is n / 2⁶⁴, nothing for a pool's size.
    fn below(&self, n: u64) -> u64 {
        splitmix(self.0.fetch_add(GAMMA, Ordering::Relaxed)) % n
    }
}

/// The weight share a backend gets at the start of its slow start: Envoy's default
/// minimum (10%). Not zero, so it gets some real traffic to warm up on and show it
/// works (its health check only proves one path); small, so a backend that comes back
/// with cold caches, or not quite well, meets a trickle rather than its full share.
const SLOW_START_FLOOR: f64 = 0.1;

/// The share of its weight a backend that came back `up_for` ago gets, over a slow
/// start of `window`: rises linearly from a small floor to 1.0 (at once for a zero
/// window).
pub fn slow_start_factor(up_for: Duration, window: Duration) -> f64 {
    if up_for >= window {
        return 1.0;
    }
    SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * up_for.as_secs_f64() / window.as_secs_f64()
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

impl Standing {
    fn primary_up(&self) -> bool {
        !self.backup && self.healthy && !self.drained
    }

    fn primary_in_service(&self) -> bool {
        !self.backup && !self.drained
    }

    fn backup_up(&self) -> bool {
        self.backup && self.healthy && !self.drained
    }
}

/// Which backends may get the next request (indices into `standings`): the healthy
/// primaries; with fewer than `panic_threshold` (0.5 = 50%) of the primaries healthy,
/// the healthy primaries and backups together, or without a healthy backup every
/// primary that is not drained (panic: spread rather than overload the survivors);
/// with no primary healthy, the healthy backups; otherwise none.
/// Drained primaries do not count towards the share: draining for a deploy is not a
/// failure, and must not tip the rest into panic.
pub fn eligible(standings: &[Standing], panic_threshold: f64) -> Eligible {
    let healthy = standings.iter().filter(|s| s.primary_up()).count();
    let in_service = standings.iter().filter(|s| s.primary_in_service()).count();
    let backups = standings.iter().any(Standing::backup_up);
    let (admit, panic): (fn(&Standing) -> bool, bool) = if healthy == 0 {
        (Standing::backup_up, false)
    } else if (healthy as f64) < panic_threshold * in_service as f64 {
        // Healthy backups take the overflow before requests go to failing primaries,
        // as Envoy spills over to the next priority before it panics.
        match backups {
            true => (|s: &Standing| s.primary_up() || s.backup_up(), false),
            false => (Standing::primary_in_service, true),
        }
    } else {
        (Standing::primary_up, false)
    };
    let indices = (0..standings.len()).filter(|&i| admit(&standings[i]));
    Eligible {
        indices: indices.collect(),
        panic,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligible {
    pub indices: Vec<usize>,
    pub panic: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Candidates 0..weights.len() with these weights, idle, equally fast.
    fn weighted(weights: &[f64]) -> Vec<Candidate> {
        let candidate = |(index, &weight)| Candidate {
            index,
            weight,
            in_flight: 0,
            latency: 0.001,
            id: splitmix(index as u64),
        };
        weights.iter().enumerate().map(candidate).collect()
    }

    /// How many of `picks` picks each of `pool_size` indices got.
    fn shares(select: &dyn Select, candidates: &[Candidate], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; candidates.iter().map(|c| c.index + 1).max().unwrap_or(0)];
        for _ in 0..picks {
            counts[select.pick(candidates, None).unwrap()] += 1;
        }
        counts
    }

    fn sequence(select: &dyn Select, candidates: &[Candidate], picks: usize) -> String {
        let name = |i: usize| char::from(b'a' + i as u8);
        (0..picks)
            .map(|_| name(select.pick(candidates, None).unwrap()))
            .collect()
    }

    #[test]
    fn round_robin_gives_each_of_three_backends_an_exact_third() {
        let rr = RoundRobin::new(3);
        assert_eq!(shares(&rr, &weighted(&[1.0; 3]), 1000), [334, 333, 333]);
    }

    #[test]
    fn round_robin_spreads_weights_smoothly_as_nginx_does() {
        let cases: [(&[f64], &str); 4] = [
            (&[5.0, 1.0, 1.0], "aabacaa"),
            (&[1.0, 1.0, 1.0], "abcabc"),
            (&[2.0, 1.0], "abaaba"),
            // Fractional (slow-start) weights keep their ratio.
            (&[0.5, 0.1, 0.1], "aabacaa"),
        ];
        for (weights, expected) in cases {
            let rr = RoundRobin::new(weights.len());
            let got = sequence(&rr, &weighted(weights), expected.len());
            assert_eq!(got, expected, "weights {weights:?}");
        }
    }

    #[test]
    fn round_robin_shares_follow_weights() {
        let rr = RoundRobin::new(2);
        assert_eq!(shares(&rr, &weighted(&[3.0, 1.0]), 400), [300, 100]);
    }

    #[test]
    fn round_robin_skips_a_down_backend_and_keeps_the_others_order() {
        let all = weighted(&[1.0; 3]);
        let without_b = [all[0], all[2]];
        let rr = RoundRobin::new(3);
        assert_eq!(sequence(&rr, &all, 3), "abc");
        assert_eq!(sequence(&rr, &without_b, 4), "acac");
        assert_eq!(sequence(&rr, &all, 6), "abcabc");
        // While it is down the others split its share evenly.
        assert_eq!(shares(&rr, &without_b, 1000), [500, 0, 500]);
    }

    #[test]
    fn least_connections_prefers_the_idle_backend() {
        let lc = LeastConnections {
            rng: Rng::seeded(7),
        };
        let mut candidates = weighted(&[1.0; 3]);
        candidates[0].in_flight = 5;
        candidates[2].in_flight = 5;
        // Of two it is always the idle one; of three, the idle one whenever it is
        // one of the two drawn (2/3 of picks), never a busy one over it.
        assert_eq!(shares(&lc, &candidates[1..], 300), [0, 300, 0]);
        let counts = shares(&lc, &candidates, 3000);
        assert!((1900..2100).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn least_connections_costs_in_flight_plus_one_per_weight() {
        // (in flight, weight) of two candidates, and which one wins.
        let cases = [
            ((2, 1.0), (0, 1.0), 1),
            ((0, 1.0), (1, 1.0), 0),
            // Equally busy: the heavier one.
            ((1, 1.0), (1, 2.0), 1),
            // 4 / 4 beats 2 / 1.
            ((3, 4.0), (1, 1.0), 0),
        ];
        for (a, b, winner) in cases {
            let mut candidates = weighted(&[a.1, b.1]);
            candidates[0].in_flight = a.0;
            candidates[1].in_flight = b.0;
            let lc = LeastConnections {
                rng: Rng::seeded(1),
            };
            let counts = shares(&lc, &candidates, 50);
            assert_eq!(counts[winner], 50, "{a:?} against {b:?}");
        }
    }

    #[test]
    fn least_latency_costs_latency_times_in_flight_plus_one_per_weight() {
        // (latency, in flight, weight) of two candidates, and which one wins.
        let cases = [
            ((0.001, 0, 1.0), (0.050, 0, 1.0), 0),
            // 1 ms behind nine in flight (10 ms) loses to an idle 4 ms.
            ((0.001, 9, 1.0), (0.004, 0, 1.0), 1),
            // 2 ms × 2 = 4 ms against 3 ms.
            ((0.002, 1, 1.0), (0.003, 0, 1.0), 1),
            // Double weight halves the cost: 6 ms / 2 against 4 ms.
            ((0.004, 0, 1.0), (0.006, 0, 2.0), 1),
            // Latencies at the estimate's floor (no recent answers): in flight decides.
            ((1e-6, 1, 1.0), (1e-6, 0, 1.0), 1),
        ];
        for (a, b, winner) in cases {
            let mut candidates = weighted(&[a.2, b.2]);
            (candidates[0].latency, candidates[0].in_flight) = (a.0, a.1);
            (candidates[1].latency, candidates[1].in_flight) = (b.0, b.1);
            let ll = LeastLatency {
                rng: Rng::seeded(1),
            };
            let counts = shares(&ll, &candidates, 50);
            assert_eq!(counts[winner], 50, "{a:?} against {b:?}");
        }
    }

    #[test]
    fn least_latency_prefers_the_fast_backend() {
        let ll = LeastLatency {
            rng: Rng::seeded(3),
        };
        let mut candidates = weighted(&[1.0; 3]);
        candidates[1].latency = 0.050;
        let counts = shares(&ll, &candidates, 3000);
        // The slow one loses every pair it is drawn in.
        assert_eq!(counts[1], 0, "{counts:?}");
    }

    #[test]
    fn power_of_two_choices_handles_one_and_no_candidate() {
        let lc = LeastConnections {
            rng: Rng::seeded(1),
        };
        let mut only = weighted(&[1.0]);
        only[0].index = 4;
        only[0].in_flight = 100;
        assert_eq!(lc.pick(&only, None), Some(4));
        assert_eq!(lc.pick(&[], None), None);
    }

    fn hash_owners(hash: &Hash, candidates: &[Candidate], keys: u64) -> Vec<usize> {
        (0..keys)
            .map(|key| hash.pick(candidates, Some(splitmix(key))).unwrap())
            .collect()
    }

    #[test]
    fn hashing_sends_a_key_to_the_same_backend_every_time() {
        let hash = Hash {
            without_key: RoundRobin::new(3),
        };
        let candidates = weighted(&[1.0; 3]);
        let first = hash_owners(&hash, &candidates, 1000);
        assert_eq!(hash_owners(&hash, &candidates, 1000), first);
        // The key's choice is not round robin's: it does not advance with picks.
        assert!(first.iter().any(|&b| b != first[0]));
    }

    #[test]
    fn removing_a_backend_moves_only_its_keys() {
        let hash = Hash {
            without_key: RoundRobin::new(4),
        };
        let all = weighted(&[1.0; 4]);
        let without_c = [all[0], all[1], all[3]];
        let before = hash_owners(&hash, &all, 10_000);
        let after = hash_owners(&hash, &without_c, 10_000);
        for (key, (was, is)) in before.iter().zip(&after).enumerate() {
            if *was != 2 {
                assert_eq!(was, is, "key {key} moved off a backend that stayed");
            }
        }
        // And those of the removed one spread over all the others.
        let moved: Vec<usize> = before
            .iter()
            .zip(&after)
            .filter(|(w, _)| **w == 2)
            .map(|(_, i)| *i)
            .collect();
        for survivor in [0, 1, 3] {
            let got = moved.iter().filter(|&&i| i == survivor).count();
            assert!(
                got > moved.len() / 5,
                "backend {survivor} got {got} of {}",
                moved.len()
            );
        }
    }

    #[test]
    fn hashing_shares_keys_by_weight() {
        let hash = Hash {
            without_key: RoundRobin::new(3),
        };
        let owners = hash_owners(&hash, &weighted(&[1.0, 2.0, 3.0]), 60_000);
        for (backend, expected) in [(0, 10_000), (1, 20_000), (2, 30_000)] {
            let got = owners.iter().filter(|&&b| b == backend).count();
            assert!(got.abs_diff(expected) < 1000, "backend {backend}: {got}");
        }
    }

    #[test]
    fn hashing_without_a_key_goes_round_robin() {
        let hash = Hash {
            without_key: RoundRobin::new(3),
        };
        assert_eq!(sequence(&hash, &weighted(&[1.0; 3]), 6), "abcabc");
        assert_eq!(hash.pick(&[], Some(1)), None);
    }

    #[test]
    fn for_algorithm_builds_each_algorithm() {
        use crate::config::HashOn;
        let candidates = weighted(&[1.0; 2]);
        let algorithms = [
            Algorithm::RoundRobin,
            Algorithm::LeastConnections,
            Algorithm::LeastLatency,
            Algorithm::Hash(HashOn::ClientIp),
        ];
        for algorithm in algorithms {
            let select = for_algorithm(&algorithm, 2);
            assert!(select.pick(&candidates, Some(9)).is_some(), "{algorithm:?}");
        }
    }

    fn standing(backup: bool, healthy: bool, drained: bool) -> Standing {
        Standing {
            backup,
            healthy,
            drained,
        }
    }

    #[test]
    fn eligibility_follows_health_panic_drain_and_backups() {
        let up = standing(false, true, false);
        let down = standing(false, false, false);
        let drained = standing(false, false, true);
        let backup_up = standing(true, true, false);
        let backup_down = standing(true, false, false);
        let cases: [(&str, Vec<Standing>, &[usize], bool); 9] = [
            ("all healthy", vec![up, up, up], &[0, 1, 2], false),
            ("one down", vec![up, down, up], &[0, 2], false),
            ("half healthy is not panic", vec![up, down], &[0], false),
            (
                "below panic: every primary",
                vec![down, up, down, backup_down],
                &[0, 1, 2],
                true,
            ),
            (
                "below panic with a backup up: the healthy, backups too",
                vec![down, up, down, backup_up],
                &[1, 3],
                false,
            ),
            (
                "drained left out even in panic",
                vec![down, up, down, drained],
                &[0, 1, 2],
                true,
            ),
            (
                "drained do not tip into panic",
                vec![up, drained, drained, down],
                &[0],
                false,
            ),
            (
                "no primary up: backups",
                vec![down, drained, backup_down, backup_up],
                &[3],
                false,
            ),
            (
                "nothing up: none",
                vec![down, drained, backup_down],
                &[],
                false,
            ),
        ];
        for (name, standings, indices, panic) in cases {
            let expected = Eligible {
                indices: indices.to_vec(),
                panic,
            };
            assert_eq!(eligible(&standings, 0.5), expected, "{name}");
        }
        assert_eq!(eligible(&[], 0.5).indices, Vec::<usize>::new());
    }

    #[test]
    fn slow_start_ramps_linearly_from_its_floor_to_full_weight() {
        let window = Duration::from_secs(10);
        let cases = [(0, 0.1), (5, 0.55), (10, 1.0), (60, 1.0)];
        for (secs, factor) in cases {
            let got = slow_start_factor(Duration::from_secs(secs), window);
            assert!((got - factor).abs() < 1e-9, "{secs} s: {got}");
        }
        assert_eq!(slow_start_factor(Duration::ZERO, Duration::ZERO), 1.0);
    }
}
