//! Peak-EWMA response time, as Finagle and Linkerd keep it, with a decaying penalty
//! after failures: what `least_latency` weighs a backend by.
//!
//! - A response slower than the estimate becomes the estimate at once (the peak): a
//!   backend that turns slow loses its traffic with its first slow answer, not once an
//!   average has caught up.
//! - A faster one pulls it down, weighted by the time since the last update:
//!   `estimate × w + rtt × (1 − w)`, `w = exp(−elapsed / τ)`.
//! - While nothing is observed the estimate decays toward zero (`× w`), so a backend
//!   that lost its traffic for being slow is tried again after a while, and keeps its
//!   traffic if it has recovered. The next answer fills that silence with its own
//!   time, so a backend answering steadily is estimated at its response time.
//! - A failure (5xx, 429, connect) sets it to `PENALTY`, a very slow backend — a
//!   backend failing fast would otherwise look the best of all — and it decays the
//!   same way; a `Retry-After` holds it there until then.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The decay time constant τ. Leaving a backend that turns slow takes its first slow
/// answer, whatever τ is. Coming back takes its estimate decaying below the others'
/// cost: from 50 ms to a 0.5 ms backend's, ln(100) ≈ 4.6 τ, so 0.5 s has a recovered
/// backend tried again, and back, about 2.3 s after. A shorter τ would try a backend
/// that is still slow more often (each try is one slow answer for some client);
/// Linkerd's 10 s suits steady meshes, not coming back within seconds.
const TAU: Duration = Duration::from_millis(500);

/// A new backend's estimate: slower than a healthy one nearby, so it is not given
/// everything before it has answered, yet without traffic it decays to a 0.5 ms
/// backend's level in τ × ln(20) ≈ 1.5 s, and answers replace it at the rate τ allows.
const NEW_BACKEND: f64 = 0.010;

/// What a failure costs, in seconds: a thousand times a 1 ms backend, so a failing
/// backend gets requests only when the others are that much busier, or once it has
/// decayed (≈ 3.5 s to 1 ms).
const PENALTY: f64 = 1.0;

/// The longest `Retry-After` honoured: a wrong or stale header must not keep a
/// recovered backend out for long (health checks and ejection handle real outages).
const MAX_HOLD: Duration = Duration::from_secs(60);

/// The estimate never reaches zero: a zero would make in flight count for nothing,
/// and a backend silent for long would get every request until its first answer. At
/// the floor, backends compare by requests in flight alone.
const FLOOR: f64 = 1e-6;

/// One backend's recent response time, as `least_latency` weighs it. Shared by the
/// requests in flight (interior mutability; cheap to read on every pick).
#[derive(Debug)]
pub struct Latency {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The estimate in seconds as of `at`.
    seconds: f64,
    /// The last update; in the future while a `Retry-After` holds the penalty, since
    /// nothing decays before it.
    at: Instant,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new(Instant::now())
    }
}

impl Latency {
    fn new(now: Instant) -> Self {
        let state = State {
            seconds: NEW_BACKEND,
            at: now,
        };
        Latency {
            state: Mutex::new(state),
        }
    }

    /// A response head arrived `rtt` after the request was sent.
    pub fn observe(&self, rtt: Duration) {
        self.observe_at(rtt, Instant::now());
    }

    /// A 5xx, a 429 or a connect failure: the backend costs more for a while, decaying;
    /// with `retry_after`, at least until then.
    pub fn penalize(&self, retry_after: Option<Duration>) {
        self.penalize_at(retry_after, Instant::now());
    }

    /// The estimate in seconds at `now`, penalty included.
    pub fn estimate(&self, now: Instant) -> f64 {
        let state = self.state.lock().unwrap();
        (state.seconds * decay(state.at, now)).max(FLOOR)
    }

    fn observe_at(&self, rtt: Duration, now: Instant) {
        let mut state = self.state.lock().unwrap();
        let rtt = rtt.as_secs_f64();
        if rtt > state.seconds {
            state.seconds = rtt;
        } else {
            let w = decay(state.at, now);
            state.seconds = state.seconds * w + rtt * (1.0 - w);
        }
        // Never earlier: an answer during a hold does not end it.
        state.at = state.at.max(now);
    }

    fn penalize_at(&self, retry_after: Option<Duration>, now: Instant) {
        let mut state = self.state.lock().unwrap();
        let hold = retry_after.unwrap_or_default().min(MAX_HOLD);
        state.seconds = (state.seconds * decay(state.at, now)).max(PENALTY);
        state.at = state.at.max(now + hold);
    }
}

/// The weight of what was known at `since`, at `now`: 1 until `since`, then falling
/// with τ.
fn decay(since: Instant, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(since);
    (-elapsed.as_secs_f64() / TAU.as_secs_f64()).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn close(got: f64, expected: f64) -> bool {
        (got - expected).abs() <= expected * 1e-9
    }

    #[test]
    fn a_new_backend_starts_at_a_modest_estimate() {
        let t0 = Instant::now();
        assert_eq!(Latency::new(t0).estimate(t0), NEW_BACKEND);
    }

    #[test]
    fn a_slower_answer_becomes_the_estimate_at_once() {
        let t0 = Instant::now();
        let latency = Latency::new(t0);
        latency.observe_at(MS, t0);
        latency.observe_at(50 * MS, t0 + MS);
        assert_eq!(latency.estimate(t0 + MS), 0.050);
    }

    #[test]
    fn faster_answers_pull_the_estimate_down_by_elapsed_time() {
        let t0 = Instant::now();
        let latency = Latency::new(t0);
        latency.observe_at(50 * MS, t0);
        latency.observe_at(10 * MS, t0 + TAU);
        let w = (-1.0f64).exp();
        assert!(close(
            latency.estimate(t0 + TAU),
            0.050 * w + 0.010 * (1.0 - w)
        ));
    }

    #[test]
    fn a_backend_answering_steadily_is_estimated_at_its_response_time() {
        let t0 = Instant::now();
        let latency = Latency::new(t0);
        latency.observe_at(50 * MS, t0);
        // Reads between answers (every pick reads) do not drag it below.
        for i in 1..=1000 {
            latency.observe_at(5 * MS, t0 + i * 10 * MS);
            let _ = latency.estimate(t0 + i * 10 * MS + 5 * MS);
        }
        let estimate = latency.estimate(t0 + 10_000 * MS);
        assert!((estimate - 0.005).abs() < 1e-9, "{estimate}");
    }

    #[test]
    fn the_estimate_decays_toward_zero_without_answers_but_not_to_zero() {
        let t0 = Instant::now();
        let latency = Latency::new(t0);
        latency.observe_at(50 * MS, t0);
        assert!(close(
            latency.estimate(t0 + 2 * TAU),
            0.050 * (-2.0f64).exp()
        ));
        assert_eq!(latency.estimate(t0 + Duration::from_secs(3600)), FLOOR);
    }

    #[test]
    fn a_backend_that_turned_slow_is_tried_again_within_three_seconds() {
        // Both known for a while, so their answers replace the new-backend default.
        let born = Instant::now();
        let t0 = born + Duration::from_secs(10);
        let (fast, slow) = (Latency::new(born), Latency::new(born));
        fast.observe_at(MS / 2, t0);
        slow.observe_at(50 * MS, t0);
        // Every 10 ms: the fast one answers; when does the slow one cost less?
        let tried_at = (1..1000)
            .map(|i| t0 + i * 10 * MS)
            .find(|&t| {
                fast.observe_at(MS / 2, t);
                slow.estimate(t) < fast.estimate(t)
            })
            .expect("the slow backend is never tried again");
        let after = tried_at - t0;
        assert!(after > Duration::from_secs(1) && after < Duration::from_secs(3));
        // Recovered, its first answer brings it within about twice the fast one (the
        // old 50 ms still weighs e^-4.6), and it keeps getting its turns.
        slow.observe_at(MS / 2, tried_at);
        assert!(slow.estimate(tried_at) < 0.0011);
    }

    #[test]
    fn a_failure_costs_the_penalty_then_decays() {
        let t0 = Instant::now();
        let latency = Latency::new(t0);
        latency.penalize_at(None, t0);
        assert_eq!(latency.estimate(t0), PENALTY);
        // A fast answer right after hardly lowers it.
        latency.observe_at(MS, t0 + MS);
        assert!(latency.estimate(t0 + MS) > 0.9 * PENALTY);
        let later = latency.estimate(t0 + 4 * TAU);
        assert!(later < PENALTY * (-3.9f64).exp() && later > 0.001);
    }

    #[test]
    fn retry_after_holds_the_penalty_until_then() {
        let t0 = Instant::now();
        let latency = Latency::new(t0);
        latency.penalize_at(Some(Duration::from_secs(5)), t0);
        latency.observe_at(MS, t0 + Duration::from_secs(1));
        let hold_end = t0 + Duration::from_secs(5);
        assert_eq!(latency.estimate(hold_end - MS), PENALTY);
        assert!(close(
            latency.estimate(hold_end + TAU),
            PENALTY * (-1.0f64).exp()
        ));
        // A later failure without Retry-After does not cut a hold short.
        let held = Latency::new(t0);
        held.penalize_at(Some(Duration::from_secs(5)), t0);
        held.penalize_at(None, t0 + Duration::from_secs(1));
        assert_eq!(held.estimate(hold_end - MS), PENALTY);
    }

    #[test]
    fn retry_after_is_honoured_for_at_most_a_minute() {
        let t0 = Instant::now();
        let latency = Latency::new(t0);
        latency.penalize_at(Some(Duration::from_secs(86_400)), t0);
        assert!(latency.estimate(t0 + MAX_HOLD + TAU) < 0.5 * PENALTY);
    }
}
