//! One backend's live state, shared by every pool generation that names its address
//! and by the requests in flight to it.
//!
//! A backend gets requests while it is *up*: its active checks pass (or the pool has
//! none), it is not ejected and not drained. Ejection is the passive check, Envoy's
//! outlier detection: `consecutive_failures` connect failures, broken answers or 5xx
//! in a row take it out for `base_ejection × times ejected` (capped at
//! `max_ejection`), and each `base_ejection` it then stays clean takes one off that
//! count, so a backend that failed once long ago starts again from the base time. The
//! pool decides whether an ejection is allowed at all ([`super::Pool`] caps the
//! ejected share). Every change of state is logged once, with its reason.

use super::client::Client;
use super::latency::Latency;
use crate::config::{BackendAddress, OutlierConfig, UpstreamConfig};
use crate::health::{Change, Health, Thresholds};
use crate::metrics::BackendMetrics;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One backend.
pub struct Backend {
    /// The `[[upstream]]` it belongs to, for the log.
    pool: Arc<str>,
    pub address: BackendAddress,
    /// `address` as text, as metrics and the access log name it.
    pub label: Arc<str>,
    pub client: Client,
    /// What `client` was made with: a rebuild that changes it makes a new backend.
    settings: Settings,
    /// A hash of the address: its identity for consistent hashing.
    id: u64,
    in_flight: AtomicU32,
    pub latency: Latency,
    pub metrics: BackendMetrics,
    state: Mutex<State>,
}

/// What a backend's connections are made with, compared when a pool is rebuilt.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    http2: bool,
    ca: Option<PathBuf>,
    max_connections: usize,
    connect_timeout: Duration,
    response_timeout: Duration,
    idle_timeout: Duration,
}

impl Settings {
    pub fn of(config: &UpstreamConfig) -> Self {
        Self {
            http2: config.http2,
            ca: config.ca.clone(),
            max_connections: config.max_connections,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            idle_timeout: config.idle_timeout,
        }
    }
}

struct State {
    /// Active checks, when the pool has them.
    health: Option<Health>,
    thresholds: Option<Thresholds>,
    outlier: Outlier,
    /// Taken out by the operator.
    drained: bool,
    /// When it last came back (checks passed again, ejection over, enabled, added to
    /// a running pool): the start of its slow start.
    up_since: Option<Instant>,
}

/// What a backend is now, as selection and the status see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Up,
    /// Its active checks fail.
    Down,
    Ejected,
    Drained,
}

/// A backend's condition and when it came back, read at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Look {
    pub condition: Condition,
    pub up_since: Option<Instant>,
}

impl Backend {
    pub fn new(
        pool: Arc<str>,
        address: BackendAddress,
        client: Client,
        settings: Settings,
        checks: Option<Thresholds>,
        up_since: Option<Instant>,
        metrics: BackendMetrics,
    ) -> Self {
        let mut hasher = DefaultHasher::new();
        address.hash(&mut hasher);
        Self {
            pool,
            id: hasher.finish(),
            label: address.to_string().into(),
            address,
            client,
            settings,
            in_flight: AtomicU32::new(0),
            latency: Latency::default(),
            metrics,
            state: Mutex::new(State {
                // Taken to be up, and checked at once.
                health: checks.map(Health::up),
                thresholds: checks,
                outlier: Outlier::default(),
                drained: false,
                up_since,
            }),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements, so a panic elsewhere while
        // it was held leaves nothing half-done.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backend's condition at `now`. An ejection that has run out ends here (the
    /// first look after it), which is when it is logged.
    pub fn look(&self, now: Instant) -> Look {
        let mut state = self.state();
        if let Some(until) = state.outlier.expire(now) {
            state.up_since = Some(until);
            drop(state);
            self.log_change("ejected", "up", "the ejection is over", false);
            state = self.state();
        }
        let condition = if state.drained {
            Condition::Drained
        } else if state.health.as_ref().is_some_and(|h| !h.is_up()) {
            Condition::Down
        } else if state.outlier.is_ejected(now) {
            Condition::Ejected
        } else {
            Condition::Up
        };
        Look {
            condition,
            up_since: state.up_since,
        }
    }

    /// Why the backend is not up, for the status; empty while it is.
    pub fn reason(&self, now: Instant) -> String {
        let state = self.state();
        if state.drained {
            "drained by the operator".into()
        } else if let Some(health) = state.health.as_ref().filter(|h| !h.is_up()) {
            health.reason().into()
        } else if state.outlier.is_ejected(now) {
            state.outlier.reason.clone()
        } else {
            String::new()
        }
    }

    /// How many times it has been ejected.
    pub fn ejections(&self) -> u32 {
        self.state().outlier.ejections
    }

    /// A pool generation with other checks (or none) takes the backend over: its
    /// health carries over, counted from now with the new thresholds.
    pub fn set_checks(&self, checks: Option<Thresholds>) {
        let mut state = self.state();
        if state.thresholds == checks {
            return;
        }
        state.health = checks.map(|t| match &state.health {
            Some(h) if !h.is_up() => Health::down(t, h.reason()),
            _ => Health::up(t),
        });
        state.thresholds = checks;
    }

    /// One active check's outcome.
    pub fn observe_check(&self, check: Result<(), String>) {
        let mut state = self.state();
        let Some(health) = state.health.as_mut() else {
            return;
        };
        let change = health.observe(check);
        let reason = health.reason().to_owned();
        let rise = state.thresholds.map_or(0, |t| t.rise);
        if change == Some(Change::WentUp) {
            state.up_since = Some(Instant::now());
        }
        drop(state);
        match change {
            Some(Change::WentDown) => self.log_change("up", "down", &reason, true),
            Some(Change::WentUp) => {
                let why = format!("{rise} checks in a row passed");
                self.log_change("down", "up", &why, false);
            }
            Some(Change::NewReason) => {
                let (pool, backend) = (&*self.pool, &self.address);
                tracing::warn!(%pool, %backend, "still down, now: {reason}");
            }
            None => {}
        }
    }

    /// A request got a good answer: the failure streak ends.
    pub fn succeeded(&self) {
        self.state().outlier.failures = 0;
    }

    /// A request failed (no connection, no answer, a 5xx); the failures in a row now.
    pub fn failed(&self, reason: String) -> u32 {
        let mut state = self.state();
        state.outlier.failures += 1;
        state.outlier.reason = reason;
        state.outlier.failures
    }

    pub fn is_ejected(&self, now: Instant) -> bool {
        self.state().outlier.is_ejected(now)
    }

    /// Ejects the backend for its next ejection time, unless it is out already.
    pub fn eject(&self, now: Instant, config: &OutlierConfig) {
        let mut state = self.state();
        if state.outlier.is_ejected(now) {
            return;
        }
        let time = state.outlier.eject(now, config);
        let why = format!(
            "{} failures in a row, the last: {}; out for {} s",
            state.outlier.failures,
            state.outlier.reason,
            time.as_secs_f64()
        );
        state.outlier.failures = 0;
        drop(state);
        self.log_change("up", "ejected", &why, true);
    }

    /// The operator's drain (`true`) or enable. An enabled backend comes back through
    /// slow start; one that was not drained stays as it is.
    pub fn set_drained(&self, drained: bool) {
        let mut state = self.state();
        if state.drained == drained {
            return;
        }
        state.drained = drained;
        if !drained {
            state.up_since = Some(Instant::now());
        }
        drop(state);
        match drained {
            true => self.log_change("up", "drained", "drained by the operator", false),
            false => self.log_change("drained", "up", "enabled by the operator", false),
        }
    }

    pub fn is_drained(&self) -> bool {
        self.state().drained
    }

    fn log_change(&self, from: &str, to: &str, reason: &str, bad: bool) {
        let (pool, backend) = (&*self.pool, &self.address);
        match bad {
            true => tracing::warn!(%pool, %backend, "{from} → {to}: {reason}"),
            false => tracing::info!(%pool, %backend, "{from} → {to}: {reason}"),
        }
    }
}

/// Passive ejection: the failure streak and the ejection it leads to.
#[derive(Debug, Default)]
struct Outlier {
    /// Failures in a row.
    failures: u32,
    /// The last failure.
    reason: String,
    ejected_until: Option<Instant>,
    /// The multiplier of the base ejection time.
    times: u32,
    /// When the last ejection ended, from which clean time is counted.
    ended: Option<Instant>,
    /// Ejections ever, for the status.
    ejections: u32,
}

impl Outlier {
    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Ejects from `now`; returns for how long.
    fn eject(&mut self, now: Instant, config: &OutlierConfig) -> Duration {
        if let Some(ended) = self.ended {
            let base = config.base_ejection.max(Duration::from_millis(1));
            let clean = now.saturating_duration_since(ended).as_nanos() / base.as_nanos();
            self.times = self
                .times
                .saturating_sub(u32::try_from(clean).unwrap_or(u32::MAX));
        }
        self.times = self.times.saturating_add(1);
        self.ejections += 1;
        let time = config
            .base_ejection
            .saturating_mul(self.times)
            .min(config.max_ejection);
        self.ejected_until = Some(now + time);
        time
    }

    /// Ends an ejection that has run out by `now`; returns when it did.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        let until = self.ejected_until.filter(|&until| until <= now)?;
        self.ejected_until = None;
        self.ended = Some(until);
        Some(until)
    }
}

/// One request in flight to a backend; dropped when its answer's body ends or is
/// dropped, when its tunnel closes, or when the request is cancelled.
pub struct InFlight(Arc<Backend>);

impl InFlight {
    pub fn backend(&self) -> &Backend {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held by the answer's body until it ends.
impl crate::http::HeldToEnd for InFlight {}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier_config() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(35),
            max_ejected_percent: 50,
        }
    }

    #[test]
    fn each_ejection_in_a_row_lasts_longer_up_to_the_cap() {
        let config = outlier_config();
        let mut outlier = Outlier::default();
        let mut now = Instant::now();
        let mut times = Vec::new();
        for _ in 0..5 {
            let time = outlier.eject(now, &config);
            assert!(outlier.is_ejected(now));
            now += time;
            assert_eq!(outlier.expire(now), Some(now));
            assert!(!outlier.is_ejected(now));
            times.push(time.as_secs());
        }
        assert_eq!(times, [10, 20, 30, 35, 35]);
        assert_eq!(outlier.ejections, 5);
    }

    #[test]
    fn the_ejection_time_shrinks_again_after_a_clean_stretch() {
        let config = outlier_config();
        let mut outlier = Outlier::default();
        let mut now = Instant::now();
        for _ in 0..3 {
            now += outlier.eject(now, &config);
            outlier.expire(now);
        }
        // Two base times clean take two off the multiplier of three.
        now += Duration::from_secs(25);
        assert_eq!(outlier.eject(now, &config), Duration::from_secs(20));
        now += Duration::from_secs(20);
        outlier.expire(now);
        now += Duration::from_secs(3600);
        assert_eq!(outlier.eject(now, &config), Duration::from_secs(10));
    }

    #[test]
    fn an_ejection_does_not_end_before_its_time() {
        let mut outlier = Outlier::default();
        let now = Instant::now();
        let time = outlier.eject(now, &outlier_config());
        assert_eq!(outlier.expire(now + time / 2), None);
        assert!(outlier.is_ejected(now + time / 2));
        assert_eq!(outlier.expire(now + time), Some(now + time));
        assert_eq!(outlier.expire(now + time * 2), None);
    }
}
