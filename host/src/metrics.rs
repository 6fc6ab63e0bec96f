//! The node's metrics: one registry per node (tests run many nodes in one process), its
//! families made once, and pre-labelled handles that each owner takes when it is built
//! (a route, a listener, an app, a database server, a backend) and keeps as fields. No
//! request looks a metric up by name or formats a label.
//!
//! Label values are bounded by what the configuration and the apps directory name:
//! sites, targets, listeners, apps, database servers, backends. Never a path or a
//! client address.
//!
//! What a live snapshot already knows (a backend's state, a replica's lag, an app's
//! version) is not counted twice: the admin listener turns the snapshots into
//! gauges at scrape time, next to these.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets in seconds, from half a millisecond (a cached static file) to ten
/// seconds (past most timeouts).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Compile-time buckets in seconds: a cache hit takes milliseconds, a big component
/// compiled by Cranelift tens of seconds.
const COMPILE_BUCKETS: [f64; 10] = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn compile_time() -> Histogram {
    Histogram::new(COMPILE_BUCKETS)
}

/// A label value from a fixed set, written as its `as_str`.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, out: &mut LabelValueEncoder) -> std::fmt::Result {
                out.write_str(self.as_str())
            }
        }
    };
}

label_enum! {
    /// What served a request.
    Kind { App => "app", Upstream => "upstream", Static => "static", Redirect => "redirect", None => "none" }
}

label_enum! {
    /// The first digit of a status code.
    Class { Informational => "1xx", Success => "2xx", Redirection => "3xx", ClientError => "4xx", ServerError => "5xx" }
}

impl Class {
    pub fn of(status: http::StatusCode) -> Self {
        match status.as_u16() {
            ..200 => Class::Informational,
            200..300 => Class::Success,
            300..400 => Class::Redirection,
            400..500 => Class::ClientError,
            _ => Class::ServerError,
        }
    }
}

label_enum! {
    /// How a guest's run failed.
    TrapKind { Deadline => "deadline", Memory => "memory", Trap => "trap" }
}

label_enum! {
    /// How a load of an app file went.
    Outcome { Ok => "ok", Failed => "failed" }
}

label_enum! {
    /// A database server's part.
    DbRole { Primary => "primary", Replica => "replica" }
}

label_enum! {
    /// Why a TLS handshake did not finish: too slow, the client closed the connection,
    /// its messages broke the protocol (no shared version or cipher, a bad record), or
    /// the socket failed.
    HandshakeFailure { Timeout => "timeout", Closed => "closed", Protocol => "protocol", Io => "io" }
}

label_enum! {
    /// Which firewall rule refused a client.
    DenyRule { Listener => "listener", Site => "site" }
}

label_enum! {
    /// Which rate limit refused a request.
    RateScope { Global => "global", Site => "site", Route => "route" }
}

label_enum! {
    /// Which connection cap refused a connection.
    Cap { Global => "global", PerIp => "per_ip" }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    site: Arc<str>,
    kind: Kind,
    target: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteClassLabels {
    site: Arc<str>,
    kind: Kind,
    target: Arc<str>,
    class: Class,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
    protocol: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandshakeLabels {
    listener: String,
    reason: HandshakeFailure,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AppLabels {
    app: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TrapLabels {
    app: Arc<str>,
    kind: TrapKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatementLabels {
    role: DbRole,
    node: Arc<str>,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackendLabels {
    upstream: Arc<str>,
    backend: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BackendClassLabels {
    upstream: Arc<str>,
    backend: Arc<str>,
    class: Class,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RuleLabels {
    rule: DenyRule,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScopeLabels {
    scope: RateScope,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CapLabels {
    cap: Cap,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The families of one node, registered in its registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteClassLabels, Counter>,
    request_duration: HistogramFamily<RouteLabels>,
    in_flight: Family<RouteLabels, Gauge>,
    connections: Family<ListenerLabels, Counter>,
    connections_open: Family<ListenerLabels, Gauge>,
    handshakes: Family<ListenerLabels, Counter>,
    handshake_failures: Family<HandshakeLabels, Counter>,
    executions: Family<AppLabels, Counter>,
    traps: Family<TrapLabels, Counter>,
    instantiation: HistogramFamily<AppLabels>,
    compile: HistogramFamily<AppLabels>,
    reloads: Family<OutcomeLabels, Counter>,
    statements: Family<StatementLabels, Counter>,
    backend_requests: Family<BackendClassLabels, Counter>,
    backend_duration: HistogramFamily<BackendLabels>,
    retries: Family<UpstreamLabels, Counter>,
    /// Handles every owner shares.
    pub firewall: FirewallMetrics,
    /// Every request of the node, for the status page's charts.
    pub total: Arc<Tally>,
    /// Each app's requests across sites, for the status page; made with the app's first
    /// route.
    apps: std::sync::Mutex<std::collections::BTreeMap<Arc<str>, Arc<Tally>>>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("wharf");
        let requests = Family::default();
        let request_duration = HistogramFamily::new_with_constructor(latency as fn() -> _);
        let in_flight = Family::default();
        let connections = Family::default();
        let connections_open = Family::default();
        let handshakes = Family::default();
        let handshake_failures = Family::default();
        let executions = Family::default();
        let traps = Family::default();
        let instantiation = HistogramFamily::new_with_constructor(latency as fn() -> _);
        let compile = HistogramFamily::new_with_constructor(compile_time as fn() -> _);
        let reloads = Family::default();
        let statements = Family::default();
        let backend_requests = Family::default();
        let backend_duration = HistogramFamily::new_with_constructor(latency as fn() -> _);
        let retries = Family::default();
        let denied = Family::<RuleLabels, Counter>::default();
        let rate_limited = Family::<ScopeLabels, Counter>::default();
        let refused = Family::<CapLabels, Counter>::default();

        let r = &mut registry;
        r.register(
            "http_requests",
            "Requests answered, by site, what served them and status class",
            requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time from the request's head to the last byte of the answer",
            Unit::Seconds,
            request_duration.clone(),
        );
        r.register(
            "http_requests_in_flight",
            "Requests routed and not yet answered in full",
            in_flight.clone(),
        );
        r.register(
            "connections",
            "Connections let in, by listener and protocol",
            connections.clone(),
        );
        r.register(
            "connections_open",
            "Connections open now, by listener and protocol",
            connections_open.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes completed",
            handshakes.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that did not complete, by reason",
            handshake_failures.clone(),
        );
        r.register(
            "wasm_executions",
            "Guest runs, one per request served by an app",
            executions.clone(),
        );
        r.register(
            "wasm_traps",
            "Guest runs that failed: past the deadline, out of memory, or another trap",
            traps.clone(),
        );
        r.register_with_unit(
            "wasm_instantiation",
            "Time to make a fresh instance for a request",
            Unit::Seconds,
            instantiation.clone(),
        );
        r.register_with_unit(
            "wasm_compile",
            "Time to compile (or load from the cache) an app's component",
            Unit::Seconds,
            compile.clone(),
        );
        r.register(
            "wasm_reloads",
            "Loads of changed app files, by outcome",
            reloads.clone(),
        );
        r.register(
            "db_statements",
            "Database statements, by server role, server and outcome",
            statements.clone(),
        );
        r.register(
            "upstream_requests",
            "Requests forwarded to a backend, by the status class of its answer",
            backend_requests.clone(),
        );
        r.register_with_unit(
            "upstream_request_duration",
            "Time from forwarding a request to a backend to its response head",
            Unit::Seconds,
            backend_duration.clone(),
        );
        r.register(
            "upstream_retries",
            "Requests sent again to another backend",
            retries.clone(),
        );
        r.register(
            "firewall_denied",
            "Clients refused by an allow/deny rule",
            denied.clone(),
        );
        r.register(
            "firewall_rate_limited",
            "Requests refused with 429 by a rate limit",
            rate_limited.clone(),
        );
        r.register(
            "firewall_connections_refused",
            "Connections closed at accept by a connection cap",
            refused.clone(),
        );
        let firewall = FirewallMetrics::new(&denied, &rate_limited, &refused);
        Arc::new(Self {
            registry,
            requests,
            request_duration,
            in_flight,
            connections,
            connections_open,
            handshakes,
            handshake_failures,
            executions,
            traps,
            instantiation,
            compile,
            reloads,
            statements,
            backend_requests,
            backend_duration,
            retries,
            firewall,
            total: Arc::default(),
            apps: Default::default(),
        })
    }

    /// Each app's tally so far, by name.
    pub fn app_tallies(&self) -> Vec<(Arc<str>, Arc<Tally>)> {
        let apps = self.apps.lock().unwrap();
        apps.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The families, then `live` (gauges made from the node's snapshots), in `format`.
    pub fn encode(&self, live: &Registry, format: Format) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, live);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        match format {
            Format::OpenMetrics => out,
            Format::Text => to_text_format(&out),
        }
    }

    /// The handles of one route of `site`, or with `site` empty, of answers given before
    /// any site was found.
    pub fn route(&self, site: &str, kind: Kind, target: &str) -> Arc<RouteMetrics> {
        let labels = RouteLabels {
            site: site.into(),
            kind,
            target: target.into(),
        };
        let requests = Class::ALL.map_to(|&class| {
            self.requests.get_or_create_owned(&RouteClassLabels {
                site: labels.site.clone(),
                kind,
                target: labels.target.clone(),
                class,
            })
        });
        let mut tallies = vec![self.total.clone()];
        if kind == Kind::App {
            let mut apps = self.apps.lock().unwrap();
            tallies.push(apps.entry(labels.target.clone()).or_default().clone());
        }
        Arc::new(RouteMetrics {
            tallies,
            duration: self.request_duration.get_or_create_owned(&labels),
            in_flight: self.in_flight.get_or_create_owned(&labels),
            requests,
            site: labels.site,
            kind,
            target: labels.target,
        })
    }

    /// The handles of one listener, by the address it is bound to.
    pub fn listener(&self, local: SocketAddr, tls: bool) -> ListenerMetrics {
        let labels = ListenerLabels {
            listener: local.to_string(),
            protocol: if tls { "https" } else { "http" },
        };
        let handshake_failures = HandshakeFailure::ALL.map_to(|&reason| {
            self.handshake_failures
                .get_or_create_owned(&HandshakeLabels {
                    listener: labels.listener.clone(),
                    reason,
                })
        });
        ListenerMetrics {
            accepted: self.connections.get_or_create_owned(&labels),
            open: self.connections_open.get_or_create_owned(&labels),
            handshakes: self.handshakes.get_or_create_owned(&labels),
            handshake_failures,
        }
    }

    /// The handles of app `name`, shared by each version of it that loads.
    pub fn app(&self, name: &Arc<str>) -> AppMetrics {
        let labels = AppLabels { app: name.clone() };
        let traps = TrapKind::ALL.map_to(|&kind| {
            self.traps.get_or_create_owned(&TrapLabels {
                app: name.clone(),
                kind,
            })
        });
        AppMetrics {
            executions: self.executions.get_or_create_owned(&labels),
            traps,
            instantiation: self.instantiation.get_or_create_owned(&labels),
            compile: self.compile.get_or_create_owned(&labels),
        }
    }

    /// Counts one load of a changed app file.
    pub fn reloaded(&self, outcome: Outcome) {
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The handles of database server `node`.
    pub fn db_server(&self, role: DbRole, node: &str) -> DbServerMetrics {
        let node: Arc<str> = node.into();
        let outcome = |outcome| {
            self.statements.get_or_create_owned(&StatementLabels {
                role,
                node: node.clone(),
                outcome,
            })
        };
        DbServerMetrics {
            ok: outcome(Outcome::Ok),
            failed: outcome(Outcome::Failed),
        }
    }

    /// The handles of one backend of upstream `upstream`.
    pub fn backend(&self, upstream: &Arc<str>, backend: &str) -> BackendMetrics {
        let labels = BackendLabels {
            upstream: upstream.clone(),
            backend: backend.into(),
        };
        let requests = Class::ALL.map_to(|&class| {
            self.backend_requests
                .get_or_create_owned(&BackendClassLabels {
                    upstream: labels.upstream.clone(),
                    backend: labels.backend.clone(),
                    class,
                })
        });
        BackendMetrics {
            duration: self.backend_duration.get_or_create_owned(&labels),
            requests,
        }
    }

    /// The retry counter of upstream `upstream`.
    pub fn retries(&self, upstream: &Arc<str>) -> Counter {
        self.retries.get_or_create_owned(&UpstreamLabels {
            upstream: upstream.clone(),
        })
    }
}

/// How `/metrics` is written: what Prometheus asks for (`Accept:
/// application/openmetrics-text`), or the older text format everything else reads
/// (`promtool check metrics`, `curl`, most other scrapers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics text as the Prometheus text format (0.0.4) has it. The samples are the
/// same; the metadata differs: a counter's `HELP` and `TYPE` name its `_total` series,
/// and there are no `UNIT` or `EOF` lines.
fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // Written with its TYPE line, which says whether the name changes.
            help = Some(rest);
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_string(),
            };
            if let Some(help) = help.take() {
                let text = help.split_once(' ').map_or("", |(_, text)| text);
                let _ = writeln!(out, "# HELP {name} {text}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Builds a fixed-size array with one handle per label value.
trait MapTo<T> {
    fn map_to<M, const N: usize>(&self, f: impl FnMut(&T) -> M) -> [M; N];
}

impl<T> MapTo<T> for [T] {
    fn map_to<M, const N: usize>(&self, mut f: impl FnMut(&T) -> M) -> [M; N] {
        assert_eq!(self.len(), N, "one handle per label value");
        std::array::from_fn(|i| f(&self[i]))
    }
}

/// One route's requests: counted and timed when the answer's last byte is gone.
#[derive(Debug)]
pub struct RouteMetrics {
    /// The node's, and the app's for an app route.
    tallies: Vec<Arc<Tally>>,
    requests: [Counter; 5],
    duration: Histogram,
    in_flight: Gauge,
    /// The labels, for the access log.
    pub site: Arc<str>,
    pub kind: Kind,
    pub target: Arc<str>,
}

impl RouteMetrics {
    /// A request is being served; [`InFlight::finish`] records its answer.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }
}

/// A request counted in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Arc<RouteMetrics>);

impl InFlight {
    pub fn route(&self) -> &RouteMetrics {
        &self.0
    }

    /// Counts the request as answered `class` after `elapsed`; it stays in flight
    /// until dropped.
    pub fn finish(&self, class: Class, elapsed: Duration) {
        self.0.requests[class as usize].inc();
        let seconds = elapsed.as_secs_f64();
        self.0.duration.observe(seconds);
        for tally in &self.0.tallies {
            tally.record(class == Class::ServerError, seconds);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Requests, errors and a latency histogram as plain atomics, which the status page
/// reads to work out rates and quantiles over its windows.
#[derive(Debug, Default)]
pub struct Tally {
    errors: AtomicU64,
    /// Per bucket of [`LATENCY_BUCKETS`] (not cumulative), the last one past them all.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
}

/// A [`Tally`] read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TallySnapshot {
    pub requests: u64,
    pub errors: u64,
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
}

impl Tally {
    fn record(&self, error: bool, seconds: f64) {
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&upper| seconds <= upper)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> TallySnapshot {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        TallySnapshot {
            requests: buckets.iter().sum(),
            errors: self.errors.load(Ordering::Relaxed),
            buckets,
        }
    }
}

impl TallySnapshot {
    /// What happened between `earlier` and this one.
    pub fn since(&self, earlier: &TallySnapshot) -> TallySnapshot {
        TallySnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
        }
    }

    /// The `q` quantile in seconds, interpolated within its bucket as Prometheus's
    /// `histogram_quantile` does; `None` without requests. Past the last bucket it is
    /// that bucket's bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.requests == 0 {
            return None;
        }
        let rank = q * self.requests as f64;
        let mut below = 0.0;
        for (i, &n) in self.buckets.iter().enumerate() {
            let upto = below + n as f64;
            if upto >= rank && n > 0 {
                let Some(&upper) = LATENCY_BUCKETS.get(i) else {
                    return LATENCY_BUCKETS.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { LATENCY_BUCKETS[i - 1] };
                return Some(lower + (upper - lower) * (rank - below) / n as f64);
            }
            below = upto;
        }
        LATENCY_BUCKETS.last().copied()
    }
}

/// One listener's connections and handshakes.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    pub accepted: Counter,
    pub open: Gauge,
    pub handshakes: Counter,
    handshake_failures: [Counter; 4],
}

impl ListenerMetrics {
    /// Counts a handshake that failed with `error`.
    pub fn handshake_failed(&self, error: &std::io::Error) {
        use std::io::ErrorKind;
        let reason = match error.kind() {
            ErrorKind::TimedOut => HandshakeFailure::Timeout,
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset => HandshakeFailure::Closed,
            // rustls reports what the peer got wrong as invalid data.
            ErrorKind::InvalidData => HandshakeFailure::Protocol,
            _ => HandshakeFailure::Io,
        };
        self.handshake_failures[reason as usize].inc();
    }

    /// A connection let in: counted, and open until the guard drops.
    pub fn opened(&self) -> OpenConnection {
        self.accepted.inc();
        self.open.inc();
        OpenConnection(self.open.clone())
    }
}

/// A connection counted open until dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One app's runs.
#[derive(Debug, Clone)]
pub struct AppMetrics {
    pub executions: Counter,
    traps: [Counter; 3],
    pub instantiation: Histogram,
    pub compile: Histogram,
}

impl AppMetrics {
    pub fn trapped(&self, kind: TrapKind) {
        self.traps[kind as usize].inc();
    }
}

/// One database server's statements.
#[derive(Debug, Clone)]
pub struct DbServerMetrics {
    ok: Counter,
    failed: Counter,
}

impl DbServerMetrics {
    pub fn statement(&self, ok: bool) {
        match ok {
            true => self.ok.inc(),
            false => self.failed.inc(),
        };
    }
}

/// One backend's forwarded requests.
#[derive(Debug, Clone)]
pub struct BackendMetrics {
    requests: [Counter; 5],
    duration: Histogram,
}

impl BackendMetrics {
    pub fn answered(&self, status: http::StatusCode, elapsed: Duration) {
        self.requests[Class::of(status) as usize].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// An attempt that got no answer (no connection, no response, too late): counted as
    /// the 5xx the gateway answers for it.
    pub fn failed(&self, elapsed: Duration) {
        self.requests[Class::ServerError as usize].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// [`FirewallMetrics::totals`].
#[derive(Debug, Clone, Copy)]
pub struct FirewallTotals {
    pub denied: u64,
    pub rate_limited: u64,
    pub refused: u64,
}

/// The firewall's refusals.
#[derive(Debug, Clone)]
pub struct FirewallMetrics {
    denied: [Counter; 2],
    rate_limited: [Counter; 3],
    refused: [Counter; 2],
}

impl FirewallMetrics {
    fn new(
        denied: &Family<RuleLabels, Counter>,
        rate_limited: &Family<ScopeLabels, Counter>,
        refused: &Family<CapLabels, Counter>,
    ) -> Self {
        Self {
            denied: DenyRule::ALL.map_to(|&rule| denied.get_or_create_owned(&RuleLabels { rule })),
            rate_limited: RateScope::ALL
                .map_to(|&scope| rate_limited.get_or_create_owned(&ScopeLabels { scope })),
            refused: Cap::ALL.map_to(|&cap| refused.get_or_create_owned(&CapLabels { cap })),
        }
    }

    /// Handles registered nowhere, for parts built without a node (unit tests).
    pub fn detached() -> Self {
        Self::new(&Family::default(), &Family::default(), &Family::default())
    }

    /// Refusals so far, summed over their labels, for the status page.
    pub fn totals(&self) -> FirewallTotals {
        let sum = |counters: &[Counter]| counters.iter().map(Counter::get).sum();
        FirewallTotals {
            denied: sum(&self.denied),
            rate_limited: sum(&self.rate_limited),
            refused: sum(&self.refused),
        }
    }

    pub fn denied(&self, rule: DenyRule) {
        self.denied[rule as usize].inc();
    }

    pub fn rate_limited(&self, scope: RateScope) {
        self.rate_limited[scope as usize].inc();
    }

    pub fn refused(&self, cap: Cap) {
        self.refused[cap as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_counts_by_status_class_and_unit_names_end_in_their_unit() {
        let metrics = Metrics::new();
        let route = metrics.route("example.test", Kind::App, "hello");
        let request = route.start();
        let text = metrics.encode(&Registry::default(), Format::OpenMetrics);
        assert!(
            text.contains(
                r#"wharf_http_requests_in_flight{site="example.test",kind="app",target="hello"} 1"#
            ),
            "{text}"
        );
        request.finish(
            Class::of(http::StatusCode::NOT_FOUND),
            Duration::from_millis(3),
        );
        drop(request);
        let text = metrics.encode(&Registry::default(), Format::OpenMetrics);
        assert!(
            text.contains(r#"wharf_http_requests_total{site="example.test",kind="app",target="hello",class="4xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"wharf_http_requests_in_flight{site="example.test",kind="app",target="hello"} 0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"wharf_http_request_duration_seconds_bucket{le="0.005",site="example.test",kind="app",target="hello"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        let text = metrics.encode(&Registry::default(), Format::Text);
        assert!(
            text.contains("# TYPE wharf_http_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE wharf_http_request_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
    }

    #[test]
    fn a_tally_quantile_interpolates_within_its_bucket() {
        let tally = Tally::default();
        assert_eq!(tally.snapshot().quantile(0.5), None);
        // 100 requests between 5 and 10 ms: the median is halfway through that bucket.
        for _ in 0..100 {
            tally.record(false, 0.007);
        }
        let p50 = tally.snapshot().quantile(0.5).unwrap();
        assert!((p50 - 0.0075).abs() < 1e-9, "{p50}");
        tally.record(true, 60.0);
        let snapshot = tally.snapshot();
        assert_eq!((snapshot.requests, snapshot.errors), (101, 1));
        assert_eq!(snapshot.quantile(1.0), Some(10.0));
        let later = tally.snapshot();
        assert_eq!(later.since(&snapshot).requests, 0);
    }

    #[test]
    fn each_label_value_has_its_own_handle() {
        // The handle arrays are indexed by the enum's discriminant.
        for (i, class) in Class::ALL.iter().enumerate() {
            assert_eq!(*class as usize, i);
        }
        for (i, kind) in TrapKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        let firewall = FirewallMetrics::detached();
        firewall.denied(DenyRule::Site);
        assert_eq!(firewall.denied[DenyRule::Site as usize].get(), 1);
        assert_eq!(firewall.denied[DenyRule::Listener as usize].get(), 0);
    }
}
