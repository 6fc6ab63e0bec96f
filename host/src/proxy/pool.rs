//! Every pool of the node, and the one loop that forwards a request to a pool.
//!
//! # Which backend, and when another
//! Each attempt picks among the eligible backends ([`select::eligible`]: healthy
//! primaries; all primaries in panic; backups when no primary is up) that this
//! request has not tried yet. A request goes to another backend only when that
//! cannot do harm:
//! - no connection could be made: it never left, so any request goes on;
//! - no answer (or a 502, 503, 504) to an idempotent request whose body was kept
//!   ([`retry`]): at most `retry.attempts` times.
//!
//! A timeout is answered 504 and not retried: the backend may still be working on it,
//! and a slow request tried on every backend in turn would make a slow pool slower.
//! Every retry needs a permit of the pool's budget. When a retry is not allowed, the
//! client gets what the last backend said (its 503 as it was) or why it said nothing.

use super::backend::{Backend, Condition, InFlight, Look, Settings};
use super::client::{self, Client, ClientSettings, SendError};
use super::retry::{self, Budget, Permit, RequestBody};
use super::select::{self, Candidate, Select, Standing};
use super::{UpstreamError, check, headers, tunnel};
use crate::config::{Algorithm, BackendAddress, HashOn, UpstreamConfig};
use crate::gateway::{Connection, GatewayError, RequestId};
use crate::health::Thresholds;
use crate::http::Body;
use crate::metrics::Metrics;
use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Every `[[upstream]]` of the node, by name.
#[derive(Default)]
pub struct Upstreams {
    pools: HashMap<Arc<str>, Arc<Pool>>,
}

/// An admin request about one backend (for deploys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction {
    /// No new requests; those in flight finish.
    Drain,
    /// Back in rotation (through slow start).
    Enable,
}

impl Upstreams {
    /// The pools `configs` describe. A backend of `previous` whose address (and
    /// connection settings) a new pool names again is the same [`Backend`], with its
    /// health, latency, ejections and requests in flight. Active checks start with
    /// [`Upstreams::start`]; a backend added to a pool that was serving starts in slow
    /// start. `trusted` are the peers whose forwarding headers are passed on.
    pub fn build(
        configs: &[UpstreamConfig],
        trusted: &[IpNet],
        previous: Option<&Upstreams>,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let trusted: Arc<[IpNet]> = trusted.into();
        let mut pools = HashMap::new();
        for config in configs {
            let old = previous.and_then(|p| p.get(&config.name));
            let pool = Pool::new(config, trusted.clone(), old.map(|p| &**p), metrics)
                .with_context(|| format!("upstream {}", config.name))?;
            pools.insert(pool.name.clone(), Arc::new(pool));
        }
        Ok(Self { pools })
    }

    /// Once this set serves (stored where requests find it): backends it shares with
    /// the set it replaces take its check thresholds, and its active checks start.
    /// Nothing before this touches a backend the running set uses, so a reload that
    /// fails after `build` changes nothing.
    pub fn start(&self) {
        for pool in self.pools.values() {
            pool.start();
        }
    }

    /// After a swap, for the set that was replaced: its active checks stop; requests
    /// in flight (and open tunnels) to its backends finish.
    pub fn retire(&self) {
        for pool in self.pools.values() {
            pool.checks().abort_all();
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    /// `GET /upstreams` on the admin listener: each pool, each backend's state, in
    /// flight, latency and ejections.
    pub fn status(&self) -> serde_json::Value {
        let upstreams = self.snapshot();
        serde_json::to_value(Status { upstreams }).expect("the status is plain data")
    }

    /// Each pool's state now, by name, for the status page and metrics.
    pub fn snapshot(&self) -> Vec<PoolStatus> {
        let mut pools: Vec<_> = self.pools.values().collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        pools.iter().map(|pool| pool.status()).collect()
    }

    /// `POST /upstreams/POOL/servers/SERVER/(drain|enable)`; `server` as written in
    /// wharf.toml or as shown by [`Upstreams::status`]. The error says what was not found.
    pub fn admin(&self, pool: &str, server: &str, action: AdminAction) -> Result<(), String> {
        let found = self
            .pools
            .get(pool)
            .ok_or_else(|| format!("there is no upstream {pool:?}"))?;
        let member = found
            .members
            .iter()
            .find(|m| names(&m.backend.address, server))
            .ok_or_else(|| format!("upstream {pool:?} has no server {server:?}"))?;
        member.backend.set_drained(action == AdminAction::Drain);
        Ok(())
    }
}

/// `server` is `address` as the status shows it (`http://127.0.0.2:8080`) or as it may
/// be written in wharf.toml (`127.0.0.2:8080`, `https://host` for port 443).
fn names(address: &BackendAddress, server: &str) -> bool {
    let shown = address.to_string();
    if server == shown {
        return true;
    }
    let default_port = if address.tls { 443 } else { 80 };
    let scheme_host = shown.rsplit_once(':').map_or(shown.as_str(), |(s, _)| s);
    let host_port = shown.split_once("://").map_or(shown.as_str(), |(_, h)| h);
    (address.port == default_port && server == scheme_host) || (!address.tls && server == host_port)
}

/// One `[[upstream]]`.
pub struct Pool {
    pub name: Arc<str>,
    members: Vec<Member>,
    select: Box<dyn Select>,
    config: UpstreamConfig,
    trusted: Arc<[IpNet]>,
    budget: Budget,
    /// Requests of this pool being forwarded now, each counted once however many tries
    /// it takes: the base of the retry budget. (The backends' in-flight counts would
    /// count a request twice while its retry runs and its first answer is kept.)
    forwarding: AtomicU32,
    /// Panic mode at the last pick, to log when it starts and ends.
    panic: AtomicBool,
    /// Held while deciding an ejection, so that two at once cannot both pass the cap.
    ejecting: Mutex<()>,
    /// This generation's active checks; dropped (so stopped) with it.
    checks: Mutex<JoinSet<()>>,
    retries: Counter,
}

struct Member {
    backend: Arc<Backend>,
    weight: u32,
    backup: bool,
}

impl Pool {
    fn new(
        config: &UpstreamConfig,
        trusted: Arc<[IpNet]>,
        old: Option<&Pool>,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let name: Arc<str> = config.name.as_str().into();
        // One TLS configuration for the pool: its roots are read once, not per backend.
        let tls = match config.servers.iter().any(|s| s.address.tls) {
            true => Some(client::tls_config(config.ca.as_deref(), config.http2)?),
            false => None,
        };
        let client_settings = ClientSettings {
            http2: config.http2,
            tls,
            max_connections: config.max_connections,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            idle_timeout: config.idle_timeout,
        };
        let settings = Settings::of(config);
        let thresholds = config.health_check.as_ref().map(|c| Thresholds {
            rise: c.rise,
            fall: c.fall,
        });
        let now = Instant::now();
        let mut members = Vec::with_capacity(config.servers.len());
        for server in &config.servers {
            let kept = old.and_then(|old| {
                old.members.iter().find(|m| {
                    m.backend.address == server.address && *m.backend.settings() == settings
                })
            });
            let backend = match kept {
                // Its checks change in `start`, once this generation is the one serving.
                Some(kept) => kept.backend.clone(),
                None => {
                    // The same address with other connection settings: a new backend,
                    // but the operator's drain holds.
                    let same_address = old.and_then(|old| {
                        old.members
                            .iter()
                            .find(|m| m.backend.address == server.address)
                    });
                    if old.is_some() && same_address.is_none() {
                        tracing::info!(pool = %name, backend = %server.address, "backend added");
                    }
                    let client = Client::new(&server.address, client_settings.clone());
                    let backend = Backend::new(
                        name.clone(),
                        server.address.clone(),
                        client,
                        settings.clone(),
                        thresholds,
                        // Added to a pool that is serving: it ramps up like one that
                        // came back, rather than take a full share cold.
                        old.is_some().then_some(now),
                        metrics.backend(&name, &server.address.to_string()),
                    );
                    if same_address.is_some_and(|m| m.backend.is_drained()) {
                        backend.set_drained(true);
                    }
                    Arc::new(backend)
                }
            };
            members.push(Member {
                backend,
                weight: server.weight,
                backup: server.backup,
            });
        }
        for gone in old.iter().flat_map(|old| &old.members) {
            if !members
                .iter()
                .any(|m| Arc::ptr_eq(&m.backend, &gone.backend))
            {
                // Its requests in flight and tunnels hold it until they finish.
                tracing::info!(pool = %name, backend = %gone.backend.address, "backend removed");
            }
        }
        Ok(Self {
            select: select::for_algorithm(&config.algorithm, members.len()),
            members,
            config: config.clone(),
            trusted,
            budget: Budget::new(config.retry.budget_percent, config.retry.budget_min),
            forwarding: AtomicU32::new(0),
            panic: AtomicBool::new(false),
            ejecting: Mutex::new(()),
            checks: Mutex::new(JoinSet::new()),
            retries: metrics.retries(&name),
            name,
        })
    }

    /// Takes the pool's backends over: their thresholds become this pool's and its
    /// active checks start (on the current tokio runtime).
    fn start(&self) {
        let thresholds = self.config.health_check.as_ref().map(|c| Thresholds {
            rise: c.rise,
            fall: c.fall,
        });
        let mut checks = self.checks();
        for member in &self.members {
            member.backend.set_checks(thresholds);
            if let Some(check) = &self.config.health_check {
                check::spawn(&mut checks, member.backend.clone(), check.clone());
            }
        }
    }

    fn checks(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.checks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `req` to a backend and returns its answer: picks among the eligible
    /// backends, retries when safe and budgeted, records latency, failures and
    /// in-flight counts, and passes upgrades (WebSocket) through.
    pub async fn forward<B>(
        &self,
        mut req: Request<B>,
        conn: &Connection,
        id: RequestId,
    ) -> Result<Response<Body>, GatewayError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<crate::http::BoxError>,
    {
        let _forwarding = Forwarding::start(&self.forwarding);
        let key = self.hash_key(&req, conn);
        let mut tried = Vec::new();
        // All down: answered at once, before the body is read.
        let mut next = self
            .pick(&tried, key)
            .ok_or_else(|| UpstreamError::NoBackend(self.name.clone()))?;
        let client_upgrade = headers::is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        headers::to_backend(&mut req, conn, id, &self.trusted);
        let (mut head, body) = req.into_parts();
        // The client connection's own extensions are nothing the backend's should see.
        head.extensions = http::Extensions::new();
        let idempotent = retry::is_idempotent(&head.method);
        let mut body = RequestBody::new(body, idempotent)
            .await
            .map_err(|_| GatewayError::BadRequest("the request body could not be read"))?;
        // The head again for each replay; a body that streams cannot have one.
        let template = body.is_replayable().then(|| head.clone());
        let mut request = Request::from_parts(head, body.take().expect("a first body"));
        let mut attempts_left = self.config.retry.attempts;
        let mut permit: Option<Permit<'_>> = None;
        // The last answer a backend gave (a 502, 503 or 504 that is being retried): the
        // client gets it, rather than a bare error, if no later attempt gets one.
        let mut answered: Option<(Response<Body>, InFlight)> = None;
        loop {
            tried.push(next);
            let backend = &self.members[next].backend;
            let guard = backend.start();
            let sent = Instant::now();
            let outcome = backend.client.send(request).await;
            drop(permit.take());
            let replay = idempotent && template.is_some() && attempts_left > 0;
            // A request a failed connection handed back, untouched.
            let mut returned = None;
            // What the client gets if there is no retry, and whether one is safe.
            let (last, may_retry) = match outcome {
                Ok(response) => {
                    backend.latency.observe(sent.elapsed());
                    backend.metrics.answered(response.status(), sent.elapsed());
                    self.judge_answer(next, &response);
                    let gateway_error = matches!(
                        response.status(),
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    );
                    (Ok(response), gateway_error && replay)
                }
                Err(SendError::Connect { request, error }) => {
                    backend.latency.penalize(None);
                    backend.metrics.failed(sent.elapsed());
                    self.failed(next, format!("could not connect: {error}"));
                    returned = Some(*request);
                    (Err(UpstreamError::Connect), true)
                }
                // Our own cap, not the backend's fault: tried elsewhere, not counted
                // against it.
                Err(SendError::Busy { request, error }) => {
                    tracing::debug!(pool = %self.name, "{error}");
                    returned = Some(*request);
                    (Err(UpstreamError::Busy(self.name.clone())), true)
                }
                Err(SendError::Failed {
                    error,
                    bad_response,
                }) => {
                    backend.latency.penalize(None);
                    backend.metrics.failed(sent.elapsed());
                    self.failed(next, format!("no answer: {error}"));
                    let why = match bad_response {
                        true => UpstreamError::BadResponse,
                        false => UpstreamError::NoResponse,
                    };
                    (Err(why), replay)
                }
                Err(SendError::Timeout) => {
                    backend.latency.penalize(None);
                    backend.metrics.failed(sent.elapsed());
                    self.failed(next, "no answer in time".into());
                    (Err(UpstreamError::Timeout), false)
                }
            };
            let again = match may_retry {
                true => self.another(&tried, key),
                false => None,
            };
            let Some((index, granted)) = again else {
                return match (last, answered) {
                    (Ok(response), _) => Ok(self.answer(response, guard, client_upgrade)),
                    (Err(_), Some((response, guard))) => {
                        Ok(self.answer(response, guard, client_upgrade))
                    }
                    (Err(why), None) => Err(why.into()),
                };
            };
            if let Ok(response) = last {
                answered = Some((response, guard));
            }
            request = match (returned, &template) {
                (Some(request), _) => request,
                (None, Some(head)) => {
                    attempts_left -= 1;
                    Request::from_parts(head.clone(), body.take().expect("a kept body"))
                }
                (None, None) => unreachable!("only a kept body is sent again"),
            };
            next = index;
            permit = Some(granted);
            self.retries.inc();
        }
    }

    /// The backend's answer as the client gets it: its body holds the request's
    /// in-flight count; a 101 opens the tunnel, which holds it instead.
    fn answer(
        &self,
        mut response: Response<Body>,
        guard: InFlight,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<Body> {
        headers::from_backend(&mut response);
        let served_by = super::ServedBy(guard.backend().label.clone());
        response.extensions_mut().insert(served_by);
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(client)) = (response.status(), client_upgrade)
        {
            let backend = hyper::upgrade::on(&mut response);
            tunnel::spawn(client, backend, self.config.tunnel_idle_timeout, guard);
            *response.body_mut() = retry::full(Bytes::new());
            return response;
        }
        response.map(|body| crate::http::held_until_end(body, guard))
    }

    /// Records what an answer says about its backend: a 5xx counts towards ejection,
    /// a 5xx or 429 makes it cost more for a while.
    fn judge_answer(&self, index: usize, response: &Response<Body>) {
        let backend = &self.members[index].backend;
        let status = response.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            backend.latency.penalize(retry_after(response.headers()));
        }
        match status.is_server_error() {
            true => self.failed(index, format!("answered {status}")),
            false => backend.succeeded(),
        }
    }

    /// Another backend for a retry, and the budget's permit for it.
    fn another(&self, tried: &[usize], key: Option<u64>) -> Option<(usize, Permit<'_>)> {
        let index = self.pick(tried, key)?;
        let requests = self.forwarding.load(Ordering::Relaxed);
        let Some(permit) = self.budget.try_acquire(requests) else {
            tracing::debug!(pool = %self.name, "retry budget spent; no retry");
            return None;
        };
        Some((index, permit))
    }

    /// One failure of member `index`; ejects it after enough in a row, unless that
    /// would take more than `max_ejected_percent` of the pool out.
    fn failed(&self, index: usize, reason: String) {
        let outlier = &self.config.outlier;
        let backend = &self.members[index].backend;
        let failures = backend.failed(reason);
        if outlier.consecutive_failures == 0 || failures < outlier.consecutive_failures {
            return;
        }
        let _deciding = self.ejecting.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let ejected = self
            .members
            .iter()
            .filter(|m| m.backend.is_ejected(now))
            .count();
        if ejected < max_ejected(self.members.len(), outlier.max_ejected_percent) {
            backend.eject(now, outlier);
        }
    }

    /// The member the algorithm chooses among the eligible ones not in `tried`.
    fn pick(&self, tried: &[usize], key: Option<u64>) -> Option<usize> {
        let now = Instant::now();
        let looks: Vec<Look> = self.members.iter().map(|m| m.backend.look(now)).collect();
        let eligible = select::eligible(&self.standings(&looks), self.config.panic_threshold);
        if tried.is_empty() {
            self.note_panic(eligible.panic);
        }
        let candidates: Vec<Candidate> = eligible
            .indices
            .into_iter()
            .filter(|index| !tried.contains(index))
            .map(|index| {
                let member = &self.members[index];
                Candidate {
                    index,
                    weight: f64::from(member.weight) * self.weight_share(&looks[index], now),
                    in_flight: member.backend.in_flight(),
                    latency: member.backend.latency.estimate(now),
                    id: member.backend.id(),
                }
            })
            .collect();
        self.select.pick(&candidates, key)
    }

    fn standings(&self, looks: &[Look]) -> Vec<Standing> {
        self.members
            .iter()
            .zip(looks)
            .map(|(member, look)| Standing {
                backup: member.backup,
                healthy: look.condition == Condition::Up,
                drained: look.condition == Condition::Drained,
            })
            .collect()
    }

    /// How long a backend in slow start has been back; `None` once it is over.
    fn slow_start(&self, look: &Look, now: Instant) -> Option<Duration> {
        let up_for = now.saturating_duration_since(look.up_since?);
        (up_for < self.config.slow_start).then_some(up_for)
    }

    /// The share of its weight a backend gets now: less while in slow start.
    fn weight_share(&self, look: &Look, now: Instant) -> f64 {
        self.slow_start(look, now).map_or(1.0, |up_for| {
            select::slow_start_factor(up_for, self.config.slow_start)
        })
    }

    fn note_panic(&self, panic: bool) {
        if self.panic.swap(panic, Ordering::Relaxed) == panic {
            return;
        }
        match panic {
            true => tracing::warn!(
                pool = %self.name,
                "panic: too few healthy backends, spreading requests over every one not drained"
            ),
            false => tracing::info!(pool = %self.name, "panic over: enough backends are healthy"),
        }
    }

    /// The request's key for consistent hashing; `None` (any backend) without one.
    fn hash_key<B>(&self, req: &Request<B>, conn: &Connection) -> Option<u64> {
        let Algorithm::Hash(on) = &self.config.algorithm else {
            return None;
        };
        match on {
            HashOn::ClientIp => Some(hash(conn.peer.ip())),
            HashOn::Header(name) => req.headers().get(name).map(|v| hash(v.as_bytes())),
            HashOn::Cookie(name) => cookie(req.headers(), name).map(hash),
        }
    }

    fn status(&self) -> PoolStatus {
        let now = Instant::now();
        let looks: Vec<Look> = self.members.iter().map(|m| m.backend.look(now)).collect();
        let panic = select::eligible(&self.standings(&looks), self.config.panic_threshold).panic;
        let servers = self
            .members
            .iter()
            .zip(&looks)
            .map(|(member, look)| {
                let backend = &member.backend;
                ServerStatus {
                    address: backend.address.to_string(),
                    weight: member.weight,
                    backup: member.backup,
                    state: match look.condition {
                        Condition::Up if self.slow_start(look, now).is_some() => "slow_start",
                        Condition::Up => "up",
                        Condition::Down => "down",
                        Condition::Ejected => "ejected",
                        Condition::Drained => "drained",
                    },
                    reason: backend.reason(now),
                    in_flight: backend.in_flight(),
                    // To the microsecond: finer is noise.
                    latency_ms: (backend.latency.estimate(now) * 1e6).round() / 1e3,
                    ejections: backend.ejections(),
                    connections: backend.client.open_connections(),
                }
            })
            .collect();
        PoolStatus {
            name: self.name.to_string(),
            algorithm: match &self.config.algorithm {
                Algorithm::RoundRobin => "round_robin",
                Algorithm::LeastConnections => "least_connections",
                Algorithm::LeastLatency => "least_latency",
                Algorithm::Hash(_) => "hash",
            },
            panic,
            retry_budget_left: self
                .budget
                .cap(self.forwarding.load(Ordering::Relaxed))
                .saturating_sub(self.budget.in_flight()),
            servers,
        }
    }
}

/// One request counted in [`Pool::forwarding`] until [`Pool::forward`] returns or is
/// cancelled.
struct Forwarding<'a>(&'a AtomicU32);

impl<'a> Forwarding<'a> {
    fn start(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Forwarding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many of a pool of `size` may be ejected at once.
fn max_ejected(size: usize, percent: u32) -> usize {
    size * percent as usize / 100
}

fn hash(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// `Retry-After` in seconds (the HTTP-date form is not worth a clock comparison
/// here: backends that shed load send seconds).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

#[derive(Serialize)]
struct Status {
    upstreams: Vec<PoolStatus>,
}

/// One pool as [`Upstreams::snapshot`] shows it.
#[derive(Debug, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub algorithm: &'static str,
    pub panic: bool,
    /// Retries the budget lets start now.
    pub retry_budget_left: u32,
    pub servers: Vec<ServerStatus>,
}

#[derive(Debug, Serialize)]
pub struct ServerStatus {
    pub address: String,
    pub weight: u32,
    pub backup: bool,
    /// up, down, ejected, drained or slow_start.
    pub state: &'static str,
    pub reason: String,
    pub in_flight: u32,
    pub latency_ms: f64,
    pub ejections: u32,
    pub connections: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HealthCheckConfig, OutlierConfig, RetryConfig, ServerConfig};
    use crate::gateway::ListenerId;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn plain(host: &str, port: u16) -> BackendAddress {
        BackendAddress {
            tls: false,
            host: host.into(),
            port,
        }
    }

    fn upstream(name: &str, servers: &[SocketAddr]) -> UpstreamConfig {
        UpstreamConfig {
            name: name.into(),
            servers: servers
                .iter()
                .map(|a| ServerConfig {
                    address: plain(&a.ip().to_string(), a.port()),
                    weight: 1,
                    backup: false,
                })
                .collect(),
            algorithm: Algorithm::RoundRobin,
            http2: false,
            ca: None,
            max_connections: 16,
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(300),
            health_check: None,
            outlier: OutlierConfig {
                consecutive_failures: 5,
                base_ejection: Duration::from_secs(10),
                max_ejection: Duration::from_secs(300),
                max_ejected_percent: 50,
            },
            slow_start: Duration::ZERO,
            panic_threshold: 0.5,
            retry: RetryConfig {
                attempts: 1,
                budget_percent: 20,
                budget_min: 3,
            },
        }
    }

    fn addresses(ports: &[u16]) -> Vec<SocketAddr> {
        ports
            .iter()
            .map(|&port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect()
    }

    #[test]
    fn a_server_is_named_by_its_address_as_shown_or_as_written() {
        let address = plain("127.0.0.2", 8080);
        for server in ["http://127.0.0.2:8080", "127.0.0.2:8080"] {
            assert!(names(&address, server), "{server}");
        }
        for server in [
            "127.0.0.2",
            "http://127.0.0.2",
            "127.0.0.2:80",
            "https://127.0.0.2:8080",
        ] {
            assert!(!names(&address, server), "{server}");
        }
        let tls = BackendAddress {
            tls: true,
            host: "app.example".into(),
            port: 443,
        };
        assert!(names(&tls, "https://app.example:443"));
        assert!(names(&tls, "https://app.example"));
        assert!(
            !names(&tls, "app.example:443"),
            "without a scheme it is plain HTTP"
        );
        let v6 = plain("::1", 80);
        assert!(
            names(&v6, "http://[::1]:80") && names(&v6, "[::1]:80") && names(&v6, "http://[::1]")
        );
    }

    #[test]
    fn a_cookie_is_found_among_several_and_in_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; session=abc".parse().unwrap());
        headers.append(header::COOKIE, "other=2;user=u7".parse().unwrap());
        assert_eq!(cookie(&headers, "session"), Some("abc"));
        assert_eq!(cookie(&headers, "user"), Some("u7"));
        assert_eq!(cookie(&headers, "sess"), None);
        assert_eq!(cookie(&HeaderMap::new(), "session"), None);
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_anything_else_is_ignored() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RETRY_AFTER, value.parse().unwrap());
            retry_after(&headers)
        };
        assert_eq!(with("30"), Some(Duration::from_secs(30)));
        assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(with("-1"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn no_more_than_the_configured_share_of_a_pool_is_ejected() {
        assert_eq!(max_ejected(2, 50), 1);
        assert_eq!(max_ejected(3, 50), 1);
        assert_eq!(max_ejected(10, 35), 3);
        assert_eq!(max_ejected(1, 50), 0, "a pool of one is never emptied");
        assert_eq!(max_ejected(4, 0), 0);
        assert_eq!(max_ejected(4, 100), 4);
    }

    #[test]
    fn the_status_json_has_every_field_the_admin_api_documents() {
        let status = Status {
            upstreams: vec![PoolStatus {
                name: "app".into(),
                algorithm: "round_robin",
                panic: false,
                retry_budget_left: 3,
                servers: vec![ServerStatus {
                    address: "http://127.0.0.2:8080".into(),
                    weight: 2,
                    backup: true,
                    state: "ejected",
                    reason: "5 failures in a row".into(),
                    in_flight: 3,
                    latency_ms: 1.5,
                    ejections: 1,
                    connections: 4,
                }],
            }],
        };
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            serde_json::json!({"upstreams": [{
                "name": "app", "algorithm": "round_robin", "panic": false, "retry_budget_left": 3,
                "servers": [{
                    "address": "http://127.0.0.2:8080", "weight": 2, "backup": true,
                    "state": "ejected", "reason": "5 failures in a row", "in_flight": 3,
                    "latency_ms": 1.5, "ejections": 1, "connections": 4,
                }],
            }]})
        );
    }

    // needs client: the tests below make real `Client`s (and pick with the real
    // algorithms); they run once the client and selection are in.

    #[tokio::test]
    async fn a_rebuild_keeps_the_same_backend_for_an_unchanged_address_and_drops_removed_ones() {
        let first = Upstreams::build(
            &[upstream("app", &addresses(&[1, 2, 3]))],
            &[],
            None,
            &Metrics::new(),
        )
        .unwrap();
        let mut edited = upstream("app", &addresses(&[2, 3, 4]));
        edited.servers[0].weight = 5;
        let second = Upstreams::build(&[edited], &[], Some(&first), &Metrics::new()).unwrap();
        let (old, new) = (
            &first.get("app").unwrap().members,
            &second.get("app").unwrap().members,
        );
        assert!(Arc::ptr_eq(&old[1].backend, &new[0].backend));
        assert!(Arc::ptr_eq(&old[2].backend, &new[1].backend));
        assert_eq!(new[0].weight, 5, "a new weight applies at once");
        assert!(!old.iter().any(|m| Arc::ptr_eq(&m.backend, &new[2].backend)));
        let removed = Arc::downgrade(&old[0].backend);
        drop(first);
        assert!(
            removed.upgrade().is_none(),
            "nothing holds a removed backend"
        );
    }

    #[tokio::test]
    async fn a_rebuild_with_other_connection_settings_makes_new_backends_that_stay_drained() {
        let first = Upstreams::build(
            &[upstream("app", &addresses(&[1]))],
            &[],
            None,
            &Metrics::new(),
        )
        .unwrap();
        first
            .admin("app", "127.0.0.1:1", AdminAction::Drain)
            .unwrap();
        let mut edited = upstream("app", &addresses(&[1]));
        edited.response_timeout = Duration::from_secs(1);
        let second = Upstreams::build(&[edited], &[], Some(&first), &Metrics::new()).unwrap();
        let renamed = Upstreams::build(
            &[upstream("other", &addresses(&[1]))],
            &[],
            Some(&first),
            &Metrics::new(),
        )
        .unwrap();
        let backend = |u: &Upstreams, name: &str| u.get(name).unwrap().members[0].backend.clone();
        assert!(!Arc::ptr_eq(
            &backend(&first, "app"),
            &backend(&second, "app")
        ));
        assert!(!Arc::ptr_eq(
            &backend(&first, "app"),
            &backend(&renamed, "other")
        ));
        assert!(backend(&second, "app").is_drained(), "the drain holds");
    }

    #[tokio::test]
    async fn failures_in_a_row_eject_a_backend_but_never_more_than_the_share_cap() {
        let upstreams = Upstreams::build(
            &[upstream("app", &addresses(&[1, 2, 3, 4]))],
            &[],
            None,
            &Metrics::new(),
        )
        .unwrap();
        let pool = upstreams.get("app").unwrap();
        for index in 0..4 {
            for _ in 0..5 {
                pool.failed(index, "answered 500".into());
            }
        }
        let now = Instant::now();
        let ejected: Vec<bool> = pool
            .members
            .iter()
            .map(|m| m.backend.is_ejected(now))
            .collect();
        assert_eq!(ejected, [true, true, false, false]);
        // A success between failures starts the count again.
        let third = &pool.members[2].backend;
        third.succeeded();
        assert_eq!(third.failed("answered 500".into()), 1);
        let status = upstreams.status();
        let servers = &status["upstreams"][0]["servers"];
        assert_eq!(servers[0]["state"], "ejected");
        assert_eq!(servers[0]["ejections"], 1);
        assert_eq!(servers[2]["state"], "up");
    }

    #[tokio::test]
    async fn drain_and_enable_show_in_the_status_and_admin_names_what_it_did_not_find() {
        let upstreams = Upstreams::build(
            &[upstream("app", &addresses(&[1, 2]))],
            &[],
            None,
            &Metrics::new(),
        )
        .unwrap();
        upstreams
            .admin("app", "127.0.0.1:2", AdminAction::Drain)
            .unwrap();
        let status = upstreams.status();
        let pool = &status["upstreams"][0];
        assert_eq!(pool["name"], "app");
        assert_eq!(pool["algorithm"], "round_robin");
        assert_eq!(pool["servers"][0]["state"], "up");
        assert_eq!(pool["servers"][1]["address"], "http://127.0.0.1:2");
        assert_eq!(pool["servers"][1]["state"], "drained");
        assert_eq!(pool["servers"][1]["reason"], "drained by the operator");
        upstreams
            .admin("app", "http://127.0.0.1:2", AdminAction::Enable)
            .unwrap();
        assert_eq!(
            upstreams.status()["upstreams"][0]["servers"][1]["state"],
            "up"
        );
        assert_eq!(
            upstreams.admin("web", "127.0.0.1:2", AdminAction::Drain),
            Err("there is no upstream \"web\"".into())
        );
        assert_eq!(
            upstreams.admin("app", "127.0.0.1:3", AdminAction::Drain),
            Err("upstream \"app\" has no server \"127.0.0.1:3\"".into())
        );
    }

    /// A backend answering every request with `status` and its own port as the body;
    /// returns its address and how many requests it got.
    async fn backend(status: StatusCode) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let hits = counted.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    async move {
                        req.into_body().collect().await?;
                        let mut response =
                            Response::new(Full::new(Bytes::from(address.port().to_string())));
                        *response.status_mut() = status;
                        Ok::<_, hyper::Error>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (address, hits)
    }

    /// A backend that reads a request head and closes without answering.
    async fn hangs_up() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        (address, hits)
    }

    /// An address nothing listens on: bound, then closed.
    async fn refused() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    }

    fn connection() -> Connection {
        Connection {
            peer: SocketAddr::from(([127, 0, 0, 9], 40000)),
            client: SocketAddr::from(([127, 0, 0, 9], 40000)),
            local: SocketAddr::from(([127, 0, 0, 1], 8080)),
            listener: ListenerId(0),
            tls: false,
            sni: None,
        }
    }

    fn request(
        method: &str,
        body: &'static str,
    ) -> Request<impl hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static> {
        Request::builder()
            .method(method)
            .uri("/x")
            .header(header::HOST, "site.example")
            .body(Full::new(Bytes::from(body)).map_err(|e: Infallible| match e {}))
            .unwrap()
    }

    async fn send(pool: &Pool, method: &str) -> Result<(StatusCode, String), GatewayError> {
        let response = pool
            .forward(
                request(method, "payload"),
                &connection(),
                RequestId::for_test(1),
            )
            .await?;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Ok((status, String::from_utf8(body.to_vec()).unwrap()))
    }

    fn pool_of(upstreams: &Upstreams) -> &Pool {
        upstreams.get("app").unwrap()
    }

    fn in_flight(pool: &Pool) -> u32 {
        pool.members.iter().map(|m| m.backend.in_flight()).sum()
    }

    #[tokio::test]
    async fn requests_take_turns_and_a_refused_connection_goes_on_to_another_backend() {
        let (a, a_hits) = backend(StatusCode::OK).await;
        let (b, b_hits) = backend(StatusCode::OK).await;
        let dead = refused().await;
        let upstreams = Upstreams::build(
            &[upstream("app", &[a, dead, b])],
            &[],
            None,
            &Metrics::new(),
        )
        .unwrap();
        let pool = pool_of(&upstreams);
        // POST too: a request that never left may go anywhere.
        for method in ["GET", "POST", "GET", "POST", "GET", "POST"] {
            let (status, _) = send(pool, method).await.unwrap();
            assert_eq!(status, StatusCode::OK);
        }
        let hits = (a_hits.load(Ordering::SeqCst), b_hits.load(Ordering::SeqCst));
        assert_eq!(hits.0 + hits.1, 6);
        assert!(
            hits.0 >= 1 && hits.1 >= 1,
            "both live backends took turns: {hits:?}"
        );
        assert_eq!(in_flight(pool), 0);
        assert_eq!(pool.budget.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_post_whose_backend_hung_up_is_not_sent_again_but_a_get_is() {
        let (gone, gone_hits) = hangs_up().await;
        let (good, good_hits) = backend(StatusCode::OK).await;
        let mut config = upstream("app", &[gone, good]);
        config.outlier.consecutive_failures = 0;
        let upstreams = Upstreams::build(&[config], &[], None, &Metrics::new()).unwrap();
        let pool = pool_of(&upstreams);
        let hits = || {
            (
                gone_hits.load(Ordering::SeqCst),
                good_hits.load(Ordering::SeqCst),
            )
        };
        let mut refused = 0;
        for _ in 0..4 {
            let before = hits();
            match send(pool, "POST").await {
                Ok((status, _)) => {
                    assert_eq!(status, StatusCode::OK);
                    assert_eq!(hits(), (before.0, before.1 + 1));
                }
                Err(error) => {
                    assert!(matches!(
                        error,
                        GatewayError::Upstream(UpstreamError::NoResponse)
                    ));
                    assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
                    assert_eq!(
                        hits(),
                        (before.0 + 1, before.1),
                        "reached once, not sent again"
                    );
                    refused += 1;
                }
            }
        }
        assert!(
            refused >= 1,
            "round robin reached the backend that hangs up"
        );
        let before = hits();
        for _ in 0..4 {
            assert_eq!(send(pool, "GET").await.unwrap().0, StatusCode::OK);
        }
        assert!(hits().0 > before.0, "GETs reached it too, and were retried");
        assert_eq!(hits().1, before.1 + 4);
        assert_eq!(in_flight(pool), 0);
    }

    #[tokio::test]
    async fn a_503_is_what_the_client_gets_when_the_retry_finds_no_connection() {
        let (answers, hits) = backend(StatusCode::SERVICE_UNAVAILABLE).await;
        let config = upstream("app", &[answers, refused().await]);
        let upstreams = Upstreams::build(&[config], &[], None, &Metrics::new()).unwrap();
        let pool = pool_of(&upstreams);
        // Whichever is tried first, the other is tried too, and only one answered.
        for _ in 0..2 {
            let (status, _) = send(pool, "GET").await.unwrap();
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert_eq!(in_flight(pool), 0);
    }

    #[tokio::test]
    async fn a_get_answered_503_is_tried_once_more_and_then_the_last_503_passes_through() {
        let backends = [
            backend(StatusCode::SERVICE_UNAVAILABLE).await,
            backend(StatusCode::SERVICE_UNAVAILABLE).await,
            backend(StatusCode::SERVICE_UNAVAILABLE).await,
        ];
        let config = upstream("app", &backends.iter().map(|b| b.0).collect::<Vec<_>>());
        let upstreams = Upstreams::build(&[config], &[], None, &Metrics::new()).unwrap();
        let pool = pool_of(&upstreams);
        let (status, body) = send(pool, "GET").await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let hits: Vec<usize> = backends
            .iter()
            .map(|b| b.1.load(Ordering::SeqCst))
            .collect();
        assert_eq!(
            hits.iter().sum::<usize>(),
            2,
            "one try and one retry: {hits:?}"
        );
        let last = backends.iter().find(|b| b.0.port().to_string() == body);
        assert!(
            last.is_some_and(|b| b.1.load(Ordering::SeqCst) == 1),
            "the backend's own answer"
        );
        // Not idempotent: answered by the first backend it reached.
        let (status, _) = send(pool, "POST").await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            backends
                .iter()
                .map(|b| b.1.load(Ordering::SeqCst))
                .sum::<usize>(),
            3
        );
    }

    #[tokio::test]
    async fn retries_stop_where_the_budget_ends_when_every_backend_fails() {
        let mut backends = Vec::new();
        for _ in 0..5 {
            backends.push(hangs_up().await);
        }
        let addresses: Vec<_> = backends.iter().map(|b| b.0).collect();
        let total = || {
            backends
                .iter()
                .map(|b| b.1.load(Ordering::SeqCst))
                .sum::<usize>()
        };
        // No budget: no retry. A budget of one: retried one after the other, each
        // retry giving its permit back, until the attempts (4) are spent.
        for (budget_min, tries) in [(0, 1), (1, 5)] {
            let mut config = upstream("app", &addresses);
            config.outlier.consecutive_failures = 0;
            config.retry = RetryConfig {
                attempts: 4,
                budget_percent: 0,
                budget_min,
            };
            let upstreams = Upstreams::build(&[config], &[], None, &Metrics::new()).unwrap();
            let before = total();
            let error = send(pool_of(&upstreams), "GET").await.unwrap_err();
            assert!(matches!(
                error,
                GatewayError::Upstream(UpstreamError::NoResponse)
            ));
            assert_eq!(total() - before, tries, "budget_min {budget_min}");
        }
    }

    #[tokio::test]
    async fn with_every_backend_drained_a_request_gets_no_backend_at_once() {
        let (a, a_hits) = backend(StatusCode::OK).await;
        let upstreams =
            Upstreams::build(&[upstream("app", &[a])], &[], None, &Metrics::new()).unwrap();
        upstreams
            .admin("app", &a.to_string(), AdminAction::Drain)
            .unwrap();
        let error = send(pool_of(&upstreams), "GET").await.unwrap_err();
        assert!(matches!(
            error,
            GatewayError::Upstream(UpstreamError::NoBackend(_))
        ));
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a_hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn backends_whose_connections_are_all_in_use_are_busy_not_failed() {
        let servers = [
            backend(StatusCode::OK).await.0,
            backend(StatusCode::OK).await.0,
        ];
        let mut config = upstream("app", &servers);
        config.max_connections = 1;
        config.connect_timeout = Duration::from_millis(100);
        config.outlier.consecutive_failures = 1;
        let upstreams = Upstreams::build(&[config], &[], None, &Metrics::new()).unwrap();
        let pool = pool_of(&upstreams);
        // Each answer's body unread holds its backend's one connection.
        let mut held = Vec::new();
        for n in 0..2 {
            let request = request("GET", "");
            held.push(
                pool.forward(request, &connection(), RequestId::for_test(n))
                    .await,
            );
        }
        assert!(held.iter().all(|r| r.is_ok()));
        let turned_away = pool
            .forward(request("GET", ""), &connection(), RequestId::for_test(3))
            .await;
        match turned_away {
            Err(e) => assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE, "{e}"),
            Ok(r) => panic!("expected 503, got {}", r.status()),
        }
        for server in 0..2 {
            assert_eq!(state(&upstreams, server), "up");
        }
        drop(held);
        let (status, _) = send(pool, "GET").await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_request_in_flight_counts_until_its_answer_ends_or_it_is_cancelled() {
        let (a, _) = backend(StatusCode::OK).await;
        let (silent, _) = {
            // Accepts and never answers.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let held = tokio::spawn(async move {
                let mut open = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    open.push(stream);
                }
            });
            (address, held)
        };
        let upstreams = Upstreams::build(
            &[upstream("app", &[a]), upstream("slow", &[silent])],
            &[],
            None,
            &Metrics::new(),
        )
        .unwrap();
        let pool = pool_of(&upstreams);
        let response = pool
            .forward(request("GET", ""), &connection(), RequestId::for_test(1))
            .await
            .unwrap();
        assert_eq!(in_flight(pool), 1, "the answer's body is still to be read");
        drop(response);
        assert_eq!(in_flight(pool), 0);

        let slow = upstreams.get("slow").unwrap();
        let conn = connection();
        let forward = slow.forward(request("GET", ""), &conn, RequestId::for_test(2));
        let cancelled = tokio::time::timeout(Duration::from_millis(200), forward).await;
        assert!(cancelled.is_err(), "the backend never answers");
        assert_eq!(
            in_flight(slow),
            0,
            "the client went away; nothing is left counted"
        );
    }

    fn state(upstreams: &Upstreams, server: usize) -> serde_json::Value {
        upstreams.status()["upstreams"][0]["servers"][server]["state"].clone()
    }

    #[tokio::test]
    async fn active_checks_take_a_failing_backend_down_and_stop_when_the_pool_is_retired() {
        let (sick, sick_checks) = backend(StatusCode::SERVICE_UNAVAILABLE).await;
        let (well, _) = backend(StatusCode::OK).await;
        let mut config = upstream("app", &[sick, well]);
        config.health_check = Some(HealthCheckConfig {
            path: "/health".into(),
            port: None,
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
            expect_status: 200..=399,
            rise: 2,
            fall: 2,
        });
        let upstreams = Upstreams::build(&[config], &[], None, &Metrics::new()).unwrap();
        upstreams.start();
        let deadline = Instant::now() + Duration::from_secs(5);
        while state(&upstreams, 0) != "down" {
            assert!(
                Instant::now() < deadline,
                "not down after 5 s: {}",
                upstreams.status()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(state(&upstreams, 1), "up");
        let reason = &upstreams.status()["upstreams"][0]["servers"][0]["reason"];
        assert!(reason.as_str().unwrap().contains("503"), "{reason}");
        // A set built but never started (its reload failed after) changes nothing, not
        // even the checks of the backends it would share.
        let unchecked = Upstreams::build(
            &[upstream("app", &[sick, well])],
            &[],
            Some(&upstreams),
            &Metrics::new(),
        );
        drop(unchecked.unwrap());
        assert_eq!(state(&upstreams, 0), "down");
        upstreams.retire();
        // Every check task has ended, cancelled: none can probe again.
        let pool = upstreams.get("app").unwrap();
        let mut checks = std::mem::take(&mut *pool.checks());
        assert!(!checks.is_empty());
        let all_ended = async {
            while let Some(ended) = checks.join_next().await {
                let cancelled = ended.is_err_and(|e| e.is_cancelled());
                assert!(cancelled, "checks went on after retire");
            }
        };
        tokio::time::timeout(Duration::from_secs(5), all_ended)
            .await
            .expect("checks went on after retire");
        assert!(sick_checks.load(Ordering::SeqCst) >= 2, "it was probed");
    }

    #[tokio::test]
    async fn a_backend_added_to_a_serving_pool_or_enabled_again_goes_through_slow_start() {
        let addresses: Vec<SocketAddr> = [1, 2]
            .into_iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect();
        let mut config = upstream("app", &addresses[..1]);
        config.slow_start = Duration::from_secs(60);
        let first =
            Upstreams::build(std::slice::from_ref(&config), &[], None, &Metrics::new()).unwrap();
        assert_eq!(
            state(&first, 0),
            "up",
            "a pool's first backends start at full weight"
        );
        let mut grown = upstream("app", &addresses);
        grown.slow_start = config.slow_start;
        let second = Upstreams::build(&[grown], &[], Some(&first), &Metrics::new()).unwrap();
        assert_eq!(state(&second, 0), "up");
        assert_eq!(state(&second, 1), "slow_start");
        let drain = |action| second.admin("app", "127.0.0.1:1", action).unwrap();
        drain(AdminAction::Drain);
        assert_eq!(state(&second, 0), "drained");
        drain(AdminAction::Enable);
        assert_eq!(state(&second, 0), "slow_start");
    }
}
