//! The last minutes of the node's and each app's requests, for the status page: the
//! request tallies read every [`INTERVAL`], kept for [`POINTS`] intervals. Rates and
//! quantiles come from the differences between two readings, so they cover a window
//! rather than the whole life of the process.

use crate::metrics::{Metrics, TallySnapshot};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often the tallies are read: one point of the charts.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Points kept: five minutes of charts.
const POINTS: usize = 60;
/// The window of the apps' figures.
const APP_WINDOW: Duration = Duration::from_secs(60);

pub struct History {
    metrics: Arc<Metrics>,
    readings: Mutex<VecDeque<Reading>>,
}

struct Reading {
    at: Instant,
    total: TallySnapshot,
    apps: HashMap<Arc<str>, TallySnapshot>,
}

/// One app over the last minute (or since the first reading, if sooner).
#[derive(Debug, Clone, PartialEq)]
pub struct AppWindow {
    pub rate: f64,
    /// 5xx answers since the start.
    pub errors_total: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The node's requests per second and p99 per interval, oldest first.
pub struct Chart {
    pub interval: Duration,
    pub rate: Vec<f64>,
    pub p99_ms: Vec<Option<f64>>,
}

impl History {
    /// Reads `metrics` now and every [`INTERVAL`] until the history is dropped.
    pub fn start(metrics: Arc<Metrics>) -> Arc<Self> {
        let history = Arc::new(Self {
            metrics,
            readings: Mutex::default(),
        });
        history.read();
        tokio::spawn(read_every_interval(Arc::downgrade(&history)));
        history
    }

    fn read(&self) {
        let reading = Reading {
            at: Instant::now(),
            total: self.metrics.total.snapshot(),
            apps: self
                .metrics
                .app_tallies()
                .into_iter()
                .map(|(name, tally)| (name, tally.snapshot()))
                .collect(),
        };
        let mut readings = self.readings.lock().unwrap();
        if readings.len() > POINTS {
            readings.pop_front();
        }
        readings.push_back(reading);
    }

    /// Each app's figures from the oldest reading within the last minute to now.
    pub fn apps_over_last_minute(&self) -> HashMap<String, AppWindow> {
        let now = Instant::now();
        let readings = self.readings.lock().unwrap();
        let base = readings
            .iter()
            .find(|r| now.duration_since(r.at) <= APP_WINDOW + INTERVAL)
            .or(readings.front());
        let elapsed = base.map_or(Duration::ZERO, |b| now.duration_since(b.at));
        self.metrics
            .app_tallies()
            .into_iter()
            .map(|(name, tally)| {
                let current = tally.snapshot();
                let earlier = base
                    .and_then(|b| b.apps.get(&name))
                    .cloned()
                    .unwrap_or_default();
                let window = current.since(&earlier);
                let figures = AppWindow {
                    rate: per_second(window.requests, elapsed),
                    errors_total: current.errors,
                    p50_ms: window.quantile(0.5).map(|s| s * 1e3),
                    p99_ms: window.quantile(0.99).map(|s| s * 1e3),
                };
                (name.to_string(), figures)
            })
            .collect()
    }

    /// The charts: one point per interval between readings.
    pub fn chart(&self) -> Chart {
        let readings = self.readings.lock().unwrap();
        let pairs = readings.iter().zip(readings.iter().skip(1));
        let (mut rate, mut p99_ms) = (Vec::new(), Vec::new());
        for (before, after) in pairs {
            let window = after.total.since(&before.total);
            rate.push(per_second(
                window.requests,
                after.at.duration_since(before.at),
            ));
            p99_ms.push(window.quantile(0.99).map(|s| s * 1e3));
        }
        Chart {
            interval: INTERVAL,
            rate,
            p99_ms,
        }
    }
}

fn per_second(count: u64, over: Duration) -> f64 {
    match over.as_secs_f64() {
        0.0 => 0.0,
        seconds => count as f64 / seconds,
    }
}

async fn read_every_interval(history: Weak<History>) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match history.upgrade() {
            Some(history) => history.read(),
            None => return,
        }
    }
}
