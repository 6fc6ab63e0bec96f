//! What the admin listener reports on: the node's live parts, read at each request.
//! Readiness, the gauges `/metrics` adds to the counted families, and `/status.json` all
//! come from the same snapshots (`registry()`, `snapshot()`, `status()`), never from
//! parsing metrics.

use super::history::History;
use crate::acme::{Acme, SiteStatus};
use crate::metrics::{Format, Metrics};
use crate::net::tls::CertStore;
use crate::proxy::Upstreams;
use crate::runtime::Runtime;
use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the node is in its life, as `/readyz` and the track file report it; shared
/// with whoever starts the drain.
#[derive(Debug, Default)]
pub struct Readiness {
    draining: AtomicBool,
    /// The drain got far enough that the node no longer holds a shared address.
    released: AtomicBool,
    /// A drain asked for through the admin listener.
    requested: tokio::sync::Notify,
}

impl Readiness {
    /// From now on `/readyz` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// From now on the track file says this node should not hold a shared address.
    pub fn release(&self) {
        self.released.store(true, Ordering::Relaxed);
    }

    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Relaxed)
    }

    /// Asks the node to drain and stop (`POST /drain`); a second ask changes nothing.
    pub fn request_drain(&self) {
        self.requested.notify_one();
    }

    /// Completes once a drain is asked for.
    pub async fn drain_requested(&self) {
        self.requested.notified().await
    }
}

/// The node's parts, as the admin endpoints read them.
pub struct Live {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub runtime: Arc<Runtime>,
    /// Swapped by reloads.
    pub upstreams: Arc<ArcSwap<Upstreams>>,
    /// Made with the first TLS listener.
    pub certs: Arc<ArcSwapOption<CertStore>>,
    /// The orderer of `tls = "acme"` sites' certificates, if there are any.
    pub acme: Arc<ArcSwapOption<Acme>>,
    pub started: SystemTime,
    pub history: Arc<History>,
}

type Labels = Vec<(&'static str, String)>;

impl Live {
    /// Why the node should not get new requests now; empty when it should:
    /// - it is draining for a shutdown;
    /// - an app in the apps directory failed to load and has no version serving;
    /// - the database primary, when there is one, does not answer its checks, and no
    ///   replica does either;
    /// - an upstream has no backend up.
    pub fn not_ready(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.readiness.is_draining() {
            why.push("draining: the node is shutting down".into());
        }
        why.extend(self.unhealthy());
        why
    }

    /// Whether this node should hold an address it shares with a peer (keepalived's
    /// track file): its own apps loaded, and not past the point of its drain where the
    /// connections it was told to close have finished. A draining node keeps the
    /// address until then, or its open connections would break when the address moves.
    /// What the pair shares (the database, the upstreams' backends) does not count:
    /// were every backend down, both nodes would give the address up and the site
    /// would stop answering at all, rather than answer 503.
    pub fn holds_shared_address(&self) -> bool {
        !self.readiness.is_released() && self.runtime.unloaded().is_empty()
    }

    /// What is wrong with the node's parts, draining aside.
    fn unhealthy(&self) -> Vec<String> {
        let mut why = Vec::new();
        for app in self.runtime.unloaded() {
            why.push(format!(
                "app {app} failed to load and has no version serving"
            ));
        }
        // A node whose primary is down still answers reads from a replica (its writes
        // get 503 at once): it stays ready while one replica is up, or a balancer
        // would take every app node out and reads would fail too.
        let databases = self.runtime.databases().status();
        let replica_up = databases
            .iter()
            .any(|n| n.role == crate::db::Role::Replica && n.health.is_up());
        for node in &databases {
            if node.role == crate::db::Role::Primary && !node.health.is_up() && !replica_up {
                let reason = node.health.reason();
                why.push(format!(
                    "database primary {} is down, and no replica is up: {reason}",
                    node.name
                ));
            }
        }
        for pool in self.upstreams.load().snapshot() {
            if !pool
                .servers
                .iter()
                .any(|s| s.state == "up" || s.state == "slow_start")
            {
                why.push(format!("upstream {} has no backend up", pool.name));
            }
        }
        why
    }

    /// `/metrics`: the counted families, and gauges read from the snapshots now.
    pub fn metrics_text(&self, format: Format) -> String {
        let mut live = Registry::with_prefix("wharf");
        let gauge = |live: &mut Registry, name, help, rows: Vec<(Labels, i64)>| {
            let family = Family::<Labels, Gauge>::default();
            for (labels, value) in rows {
                family.get_or_create(&labels).set(value);
            }
            live.register(name, help, family);
        };
        let seconds = |live: &mut Registry, name, help, rows: Vec<(Labels, f64)>| {
            let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
            for (labels, value) in rows {
                family.get_or_create(&labels).set(value);
            }
            live.register_with_unit(name, help, Unit::Seconds, family);
        };
        let counter = |live: &mut Registry, name, help, rows: Vec<(Labels, u64)>| {
            let family = Family::<Labels, Counter>::default();
            for (labels, value) in rows {
                family.get_or_create(&labels).inc_by(value);
            }
            live.register(name, help, family);
        };
        let version = env!("CARGO_PKG_VERSION").to_string();
        gauge(
            &mut live,
            "build_info",
            "The wharf build serving",
            vec![(vec![("version", version)], 1)],
        );
        let ready = Gauge::<i64>::default();
        ready.set(self.not_ready().is_empty() as i64);
        live.register("ready", "1 when /readyz answers 200", ready);
        let dropped = Counter::<u64>::default();
        dropped.inc_by(super::dropped_log_lines());
        live.register(
            "log_lines_dropped",
            "Log lines dropped because the log output did not keep up",
            dropped,
        );
        let registry = self.runtime.registry();
        let apps = registry
            .apps()
            .map(|app| {
                let labels = vec![
                    ("app", app.name.to_string()),
                    ("version", app.version()),
                    ("tier", app.tier.as_str().to_string()),
                ];
                (labels, 1)
            })
            .collect();
        gauge(
            &mut live,
            "app_info",
            "Each app loaded, with its version and the compiler tier it serves from",
            apps,
        );
        let expiry = self
            .certs
            .load()
            .as_ref()
            .map_or_else(Vec::new, |c| c.expiry());
        let expiry = expiry
            .into_iter()
            .map(|e| (vec![("site", e.site)], e.not_after as f64))
            .collect();
        seconds(
            &mut live,
            "tls_certificate_expiry_timestamp",
            "When each site's certificate expires, in unix time",
            expiry,
        );
        let acme = self.acme_status();
        let per_site = |value: fn(&SiteStatus) -> Option<i64>| {
            acme.iter()
                .filter_map(|s| Some((vec![("site", s.site.clone())], value(s)?)))
                .collect::<Vec<_>>()
        };
        gauge(
            &mut live,
            "acme_failures",
            "Failed ACME orders in a row per site; 0 once one succeeds",
            per_site(|s| Some(s.failures.into())),
        );
        seconds(
            &mut live,
            "acme_renewal_timestamp",
            "When each ACME site's certificate is to be renewed, in unix time",
            per_site(|s| s.renew_at)
                .into_iter()
                .map(|(labels, at)| (labels, at as f64))
                .collect(),
        );
        counter(
            &mut live,
            "acme_orders",
            "ACME certificates this node obtained, per site",
            acme.iter()
                .map(|s| (vec![("site", s.site.clone())], s.orders))
                .collect(),
        );
        self.database_gauges(&mut live, gauge, seconds);
        self.upstream_gauges(&mut live, gauge, counter);
        self.metrics.encode(&live, format)
    }

    fn database_gauges(
        &self,
        live: &mut Registry,
        gauge: impl Fn(&mut Registry, &'static str, &'static str, Vec<(Labels, i64)>),
        seconds: impl Fn(&mut Registry, &'static str, &'static str, Vec<(Labels, f64)>),
    ) {
        let nodes = self.runtime.databases().status();
        let role = |r: crate::db::Role| match r {
            crate::db::Role::Primary => "primary",
            crate::db::Role::Replica => "replica",
        };
        let (mut up, mut lag, mut rotation, mut pool, mut waiting) =
            (vec![], vec![], vec![], vec![], vec![]);
        for node in &nodes {
            let named = vec![("node", node.name.clone())];
            let mut with_role = named.clone();
            with_role.push(("role", role(node.role).into()));
            up.push((with_role, node.health.is_up() as i64));
            if node.role == crate::db::Role::Replica {
                rotation.push((named.clone(), node.health.is_up() as i64));
                if let Some(l) = node.lag {
                    lag.push((named.clone(), l.as_secs_f64()));
                }
            }
            if let Some(p) = node.pool {
                for (state, n) in [("idle", p.idle), ("in_use", p.in_use)] {
                    let mut labels = named.clone();
                    labels.push(("state", state.into()));
                    pool.push((labels, n as i64));
                }
                waiting.push((named, p.waiting as i64));
            }
        }
        gauge(
            live,
            "db_node_up",
            "1 while a database server answers its checks",
            up,
        );
        seconds(
            live,
            "db_replica_lag",
            "How far each replica was behind the primary at its last check",
            lag,
        );
        gauge(
            live,
            "db_replica_in_rotation",
            "1 while a replica serves reads",
            rotation,
        );
        gauge(
            live,
            "db_pool_connections",
            "Pooled connections to each server, idle or in use",
            pool,
        );
        gauge(
            live,
            "db_pool_waiting",
            "Statements waiting for a pooled connection",
            waiting,
        );
    }

    fn upstream_gauges(
        &self,
        live: &mut Registry,
        gauge: impl Fn(&mut Registry, &'static str, &'static str, Vec<(Labels, i64)>),
        counter: impl Fn(&mut Registry, &'static str, &'static str, Vec<(Labels, u64)>),
    ) {
        let (mut up, mut in_flight, mut ejections, mut budget) = (vec![], vec![], vec![], vec![]);
        for pool in self.upstreams.load().snapshot() {
            budget.push((
                vec![("upstream", pool.name.clone())],
                pool.retry_budget_left as i64,
            ));
            for server in pool.servers {
                let labels = vec![
                    ("upstream", pool.name.clone()),
                    ("backend", server.address.clone()),
                ];
                let is_up = matches!(server.state, "up" | "slow_start");
                up.push((labels.clone(), is_up as i64));
                in_flight.push((labels.clone(), server.in_flight as i64));
                ejections.push((labels, u64::from(server.ejections)));
            }
        }
        gauge(
            live,
            "upstream_backend_up",
            "1 while a backend takes requests (up or in slow start)",
            up,
        );
        gauge(
            live,
            "upstream_requests_in_flight",
            "Requests a backend is answering now",
            in_flight,
        );
        counter(
            live,
            "upstream_ejections",
            "Times outlier detection took a backend out",
            ejections,
        );
        gauge(
            live,
            "upstream_retry_budget_remaining",
            "Retries the budget lets start now",
            budget,
        );
    }

    /// `/status.json`: what the status page shows. Times are unix seconds, durations
    /// milliseconds (lag in seconds), rates per second:
    /// - `node`: `version`, `started_at`, `now`, `ready`, `not_ready` (the reasons);
    /// - `apps[]`: `name`, `version`, `loaded_at`, `tier` (`baseline` or `optimised`:
    ///   which compiler made the code serving), `requests_per_second`, `p50_ms` and
    ///   `p99_ms` over the last minute (null without requests), `errors` (5xx since
    ///   the start);
    /// - `upstreams[]`: `name`, `servers[]` with `address`, `state`, `in_flight`,
    ///   `latency_ms`, `ejections`;
    /// - `databases[]`: `name`, `role`, `up`, `in_rotation`, `lag_seconds`;
    /// - `certificates[]`: `site`, `hosts`, `not_after`;
    /// - `firewall`: `denied`, `rate_limited`, `connections_refused`;
    /// - `reload_errors[]`, newest first: `at`, `what` (the app), `error`;
    /// - `history`: `interval_seconds` and, oldest first, `requests_per_second[]` and
    ///   `p99_ms[]` of the node, one point per interval.
    pub fn status(&self) -> Value {
        let now = SystemTime::now();
        let windows = self.history.apps_over_last_minute();
        let registry = self.runtime.registry();
        let mut apps: Vec<_> = registry.apps().collect();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        let apps: Vec<Value> = apps
            .into_iter()
            .map(|app| {
                let window = windows.get(&*app.name);
                json!({
                    "name": &*app.name,
                    "version": app.version(),
                    "loaded_at": unix(app.loaded_at),
                    "tier": app.tier.as_str(),
                    "requests_per_second": window.map_or(0.0, |w| round(w.rate, 3)),
                    "errors": window.map_or(0, |w| w.errors_total),
                    "p50_ms": window.and_then(|w| w.p50_ms).map(|v| round(v, 3)),
                    "p99_ms": window.and_then(|w| w.p99_ms).map(|v| round(v, 3)),
                })
            })
            .collect();
        let upstreams: Vec<Value> = self
            .upstreams
            .load()
            .snapshot()
            .into_iter()
            .map(|pool| {
                let servers: Vec<Value> = pool
                    .servers
                    .iter()
                    .map(|s| {
                        json!({
                            "address": s.address, "state": s.state, "in_flight": s.in_flight,
                            "latency_ms": s.latency_ms, "ejections": s.ejections,
                        })
                    })
                    .collect();
                json!({"name": pool.name, "servers": servers})
            })
            .collect();
        let databases: Vec<Value> = self
            .runtime
            .databases()
            .status()
            .into_iter()
            .map(|node| {
                let replica = node.role == crate::db::Role::Replica;
                json!({
                    "name": node.name,
                    "role": if replica { "replica" } else { "primary" },
                    "up": node.health.is_up(),
                    "in_rotation": node.health.is_up(),
                    "lag_seconds": node.lag.filter(|_| replica).map(|l| l.as_secs_f64()),
                })
            })
            .collect();
        let certificates = self
            .certs
            .load()
            .as_ref()
            .map_or_else(Vec::new, |c| c.expiry());
        let firewall = self.metrics.firewall.totals();
        let reload_errors: Vec<Value> = self
            .runtime
            .load_errors()
            .into_iter()
            .map(|e| json!({"at": unix(e.at), "what": e.app, "error": e.error}))
            .collect();
        let not_ready = self.not_ready();
        let history = self.history.chart();
        json!({
            "node": {
                "version": env!("CARGO_PKG_VERSION"),
                "started_at": unix(self.started),
                "now": unix(now),
                "ready": not_ready.is_empty(),
                "not_ready": not_ready,
            },
            "apps": apps,
            "upstreams": upstreams,
            "databases": databases,
            "certificates": certificates,
            "acme": self.acme_status(),
            "firewall": {
                "denied": firewall.denied,
                "rate_limited": firewall.rate_limited,
                "connections_refused": firewall.refused,
            },
            "reload_errors": reload_errors,
            "history": {
                "interval_seconds": history.interval.as_secs(),
                "requests_per_second": history.rate.iter().map(|r| round(*r, 3)).collect::<Vec<_>>(),
                "p99_ms": history.p99_ms.iter().map(|p| p.map(|v| round(v, 3))).collect::<Vec<_>>(),
            },
        })
    }
}

impl Live {
    /// Each ACME site's certificate, renewal and failures; empty without ACME sites.
    pub fn acme_status(&self) -> Vec<SiteStatus> {
        self.acme
            .load()
            .as_ref()
            .map_or_else(Vec::new, |a| a.status())
    }
}

#[cfg(test)]
impl Live {
    /// A node with no apps, SQLite, no upstreams and no certificates.
    pub fn for_test() -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap().keep();
        let databases = crate::db::Provider::Sqlite(crate::db::SqliteDir::new(dir.join("data")));
        let metrics = Metrics::new();
        let runtime = Runtime::with_pool(
            &dir,
            None,
            databases,
            crate::runtime::PoolOptions::default(),
            metrics.clone(),
        )
        .unwrap();
        Arc::new(Self {
            history: History::start(metrics.clone()),
            metrics,
            readiness: Arc::default(),
            runtime,
            upstreams: Arc::default(),
            certs: Arc::default(),
            acme: Arc::default(),
            started: SystemTime::now(),
        })
    }
}

fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| round(d.as_secs_f64(), 3))
}

/// `value` to `places` decimals: the page shows no more, and JSON stays short.
fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}
