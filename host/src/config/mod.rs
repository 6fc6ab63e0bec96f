//! `wharf.toml`: the node's configuration. Every key is optional and unknown keys are
//! errors that name the key; `wharf serve apps/` runs without a file at all.
//!
//! Values are parsed into their types once, here: networks, host patterns, URLs,
//! durations, route targets. Code after [`Config::load`] reads typed fields and never
//! parses a string of the file again.
//!
//! Reading stops at the first syntax error, unknown key or value of the wrong TOML type
//! (that is what the TOML reader gives), named by its key path; the checks after it
//! report every problem at once, each with its key path (`site[1].tls.cert`). Relative
//! paths are relative to the file's directory.

mod check;
mod file;

use crate::http::HostPattern;
use ipnet::IpNet;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Config {
    /// Where to accept connections. Default: one plain listener from `--listen`.
    pub listeners: Vec<ListenerConfig>,
    /// Virtual hosts. Without any, every host gets the apps directory's routes.
    pub sites: Vec<SiteConfig>,
    /// What a request for a host no site names gets.
    pub unknown_host: UnknownHost,
    pub apps: AppsConfig,
    pub limits: LimitsConfig,
    /// The MySQL/MariaDB cluster apps query. Without it, apps get SQLite files.
    pub database: Option<DatabaseConfig>,
    /// Health checks on a listener of their own. Without it, there is none.
    pub admin: Option<AdminConfig>,
    /// `[[upstream]]`: pools of backends that routes send requests on to.
    pub upstreams: Vec<UpstreamConfig>,
    pub firewall: FirewallConfig,
    pub log: LogConfig,
    /// Set when a site has `tls = "acme"` (the defaults without an `[acme]` section);
    /// `challenge` is always set.
    pub acme: Option<AcmeConfig>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `access`: one line per request, when its answer's last byte is gone.
    pub access: bool,
    /// `access_sample`: the share of requests (0 to 1) that get one; answers with a
    /// 5xx status always do.
    pub access_sample: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            access: true,
            access_sample: 1.0,
        }
    }
}

/// `[firewall]`
#[derive(Debug, Clone, PartialEq)]
pub struct FirewallConfig {
    /// Peers (CIDRs or bare addresses) whose PROXY protocol header (on listeners with
    /// `proxy_protocol`), `X-Forwarded-*` and `Forwarded` headers are believed; from
    /// anyone else they are ignored (the forwarding headers replaced).
    pub trusted_proxies: Vec<IpNet>,
    /// `allow`, `deny`: the rules of every public listener; a listener's own lists add
    /// to them.
    pub rules: IpRules,
    /// `max_connections`: open connections across the public listeners; past it a new
    /// one is closed at once.
    pub max_connections: Option<u32>,
    /// `max_connections_per_ip`: open connections from one client address.
    pub max_connections_per_ip: Option<u32>,
    /// `rate_limit`: requests per client address, across all sites.
    pub rate_limit: Option<RateLimit>,
    /// `max_tracked_clients`: the most client addresses each rate limiter remembers,
    /// which bounds its memory however many addresses arrive.
    pub max_tracked_clients: usize,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            rules: IpRules::default(),
            max_connections: None,
            max_connections_per_ip: None,
            rate_limit: None,
            max_tracked_clients: defaults::max_tracked_clients(),
        }
    }
}

/// `allow` and `deny`: CIDRs or bare addresses. Deny wins; with no `allow`, everyone
/// not denied is let in.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IpRules {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

/// `rate_limit = { per_second, burst }`: requests per second from one client address,
/// with `burst` more taken at once (default: one second's worth).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The requests a client may send at once: `burst`, or one second's worth.
    pub fn burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| (self.per_second.ceil() as u32).max(1))
    }
}

/// `[[upstream]]`: a pool of backends serving the same thing, and how requests are
/// spread over them, checked and retried.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// What routes name it by (`{ path = "/", upstream = "app" }`).
    pub name: String,
    /// `servers`, at least one that is not a backup; addresses are distinct.
    pub servers: Vec<ServerConfig>,
    /// Default round robin.
    pub algorithm: Algorithm,
    /// Speak HTTP/2 to the backends (h2c on `http://`, ALPN h2 on `https://`).
    pub http2: bool,
    /// `ca`: PEM file of the authorities `https://` backends are verified against,
    /// instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// Most connections open to one backend at once (HTTP/1.1: requests in flight);
    /// past it a request waits for one, within the connect timeout. Default 256.
    pub max_connections: usize,
    /// `connect_timeout_ms`, default 1 s: TCP and TLS, then the attempt fails (and is
    /// retried on another backend).
    pub connect_timeout: Duration,
    /// `response_timeout_ms`, default 30 s: how long the response head may take
    /// after the request's last progress (its head, or a piece of its body), so a long
    /// upload is not a timeout but a backend that stops reading one is; past it 504.
    pub response_timeout: Duration,
    /// `idle_timeout_ms`, default 60 s: the longest pause in a body, either way, and
    /// how long an unused pooled connection is kept.
    pub idle_timeout: Duration,
    /// `tunnel_idle_timeout_ms`, default 300 s: the longest pause on an upgraded
    /// connection (WebSocket) before both sides are closed.
    pub tunnel_idle_timeout: Duration,
    /// `[upstream.health_check]`; without it, only passive checks.
    pub health_check: Option<HealthCheckConfig>,
    /// `[upstream.outlier]`: passive ejection.
    pub outlier: OutlierConfig,
    /// `slow_start_ms`, default 10 s: a backend that comes back ramps from a small
    /// share to its full weight over this time (0: at once).
    pub slow_start: Duration,
    /// `panic_threshold_percent`, default 50, kept as a fraction (0.5): with fewer
    /// healthy primaries than this share, requests are spread over all primaries rather
    /// than overload the rest (0: never).
    pub panic_threshold: f64,
    /// `[upstream.retry]`
    pub retry: RetryConfig,
}

/// One of `servers`: `{ address, weight, backup }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub address: BackendAddress,
    /// 1..=1000, default 1.
    pub weight: u32,
    /// Used only when no primary (non-backup) server is up.
    pub backup: bool,
}

/// A backend as written: `127.0.0.2:8080` (plain HTTP), `http://host:port` or
/// `https://host:port` (port defaults 80 and 443); the host in lower case, so two
/// spellings of one backend are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAddress {
    pub tls: bool,
    /// A name or an IP address (IPv6 without brackets); for TLS, the SNI and the name
    /// the certificate is checked for.
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for BackendAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        match self.host.contains(':') {
            true => write!(f, "{scheme}://[{}]:{}", self.host, self.port),
            false => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

impl std::str::FromStr for BackendAddress {
    type Err = String;

    /// As in `servers`: `127.0.0.2:8080`, `http://host[:port]` or `https://host[:port]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check::backend_address(s)
    }
}

/// `algorithm`
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Algorithm {
    /// `round_robin`: smooth weighted round robin.
    #[default]
    RoundRobin,
    /// `least_connections`: power of two choices on requests in flight.
    LeastConnections,
    /// `least_latency`: power of two choices on peak-EWMA response time.
    LeastLatency,
    /// `hash`, with `hash_on`: consistent (rendezvous) hashing.
    Hash(HashOn),
}

/// `hash_on`: `client_ip` (default), `header:NAME` or `cookie:NAME`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum HashOn {
    #[default]
    ClientIp,
    Header(http::HeaderName),
    Cookie(String),
}

/// `[upstream.health_check]`: active checks.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// Default "/".
    pub path: String,
    /// Check this port of the backend's host instead of its own (e.g. a wharf
    /// node's admin listener, `/readyz`).
    pub port: Option<u16>,
    /// `interval_ms`, default 2 s, each jittered by up to a tenth.
    pub interval: Duration,
    /// `timeout_ms`, default 1 s.
    pub timeout: Duration,
    /// `expect_status`, default 200..=399 (a number given: exactly it).
    pub expect_status: std::ops::RangeInclusive<u16>,
    /// Default 2.
    pub rise: u32,
    /// Default 3.
    pub fall: u32,
}

/// `[upstream.outlier]`: passive ejection of a backend that keeps failing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Connect failures or 5xx answers in a row that eject; default 5, 0 turns it off.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// `base_ejection_ms`, default 10 s: the first ejection; each repeat adds as much
    /// again, up to `max_ejection_ms` (default 300 s).
    #[serde(
        rename = "base_ejection_ms",
        default = "defaults::base_ejection",
        with = "serde_duration::millis"
    )]
    pub base_ejection: Duration,
    #[serde(
        rename = "max_ejection_ms",
        default = "defaults::max_ejection",
        with = "serde_duration::millis"
    )]
    pub max_ejection: Duration,
    /// `max_ejected_percent`, default 50: never more of the pool ejected at once.
    #[serde(default = "defaults::max_ejected_percent")]
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: defaults::consecutive_failures(),
            base_ejection: defaults::base_ejection(),
            max_ejection: defaults::max_ejection(),
            max_ejected_percent: defaults::max_ejected_percent(),
        }
    }
}

/// `[upstream.retry]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Further tries of an idempotent request that got no answer (or a 502, 503 or
    /// 504) from a backend, each on another backend; default 1. Connect failures are
    /// tried on every other backend, within the budget.
    #[serde(default = "defaults::retry_attempts")]
    pub attempts: u32,
    /// `budget_percent`, default 20: retries in flight at most this share of the
    /// pool's requests in flight...
    #[serde(default = "defaults::budget_percent")]
    pub budget_percent: u32,
    /// `budget_min`, default 3: ...or this many, whichever is more.
    #[serde(default = "defaults::budget_min")]
    pub budget_min: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: defaults::retry_attempts(),
            budget_percent: defaults::budget_percent(),
            budget_min: defaults::budget_min(),
        }
    }
}

/// `[admin]`: the operator's listener, apart from the sites: `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Default 127.0.0.1:9180.
    pub address: SocketAddr,
    /// Client networks let in (`allow`: CIDRs such as "10.0.0.0/8", or bare addresses
    /// as networks of one); others get 403. Default: loopback.
    pub allow: Vec<IpNet>,
    /// `drain_delay_ms`: on SIGTERM, how long the listeners keep accepting after
    /// `/readyz` turns 503, so balancers checking it stop sending before connections
    /// are refused.
    pub drain_delay: Duration,
    /// `token_env` or `token_file`: where the bearer token every request but
    /// `/healthz` and `/readyz` must carry is read from. Neither: no token.
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    /// `track_file`: a keepalived `vrrp_track_file` (with `weight 0`) that wharf keeps
    /// at `0` while this node should hold a shared address and `1` once it should not:
    /// not ready, or done draining. See [`crate::monitor::track`].
    pub track_file: Option<PathBuf>,
}

impl AdminConfig {
    /// The bearer token, from the environment or a file; `None` when neither is set.
    /// Errors name where it was looked for, never the value.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        let token = if let Some(var) = &self.token_env {
            std::env::var(var).map_err(|_| {
                anyhow::anyhow!("admin.token_env: environment variable {var} is not set")
            })?
        } else if let Some(file) = &self.token_file {
            std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("admin.token_file: {}: {e}", file.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string()
        } else {
            return Ok(None);
        };
        let origin = match &self.token_env {
            Some(var) => format!("admin.token_env: {var}"),
            None => "admin.token_file".to_string(),
        };
        anyhow::ensure!(!token.is_empty(), "{origin}: the token is empty");
        Ok(Some(token))
    }
}

/// `[[listener]]`
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Port 0 takes any free port, so several listeners may name the same address
    /// with port 0.
    pub address: SocketAddr,
    /// HTTPS, with each site's certificate chosen by SNI.
    pub tls: bool,
    /// Reads a PROXY protocol header (v1 or v2) from trusted proxies, before TLS.
    pub proxy_protocol: bool,
    /// `allow`, `deny`: checked right after accept, before any TLS work, added to
    /// `[firewall]`'s.
    pub rules: IpRules,
}

/// `[[site]]`: one virtual host.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// Host names (`www.foobar.com`, or `*.foobar.com` for any one-label subdomain;
    /// see [`crate::http`] for the rule).
    pub hosts: Vec<HostPattern>,
    /// Serves requests for hosts no site names (with `unknown_host = "default"`).
    pub default: bool,
    /// The site's own name among `hosts`, lower case: requests for the others are
    /// redirected (308) to it, e.g. `foobar.com` → `www.foobar.com`.
    pub canonical_host: Option<String>,
    /// Requests over plain HTTP are redirected (308) to HTTPS.
    pub https_redirect: bool,
    /// `Strict-Transport-Security: max-age=N` on HTTPS responses.
    pub hsts_max_age: Option<u64>,
    pub tls: Option<TlsConfig>,
    /// Static files served at `/` (below every route).
    pub root: Option<PathBuf>,
    /// Cache-Control for static files.
    pub cache_control: Option<String>,
    /// `headers`: response headers added to every answer of the site that does not
    /// carry its own (`X-Content-Type-Options`, `Content-Security-Policy`, ...), as
    /// nginx's `add_header` or Envoy's `response_headers_to_add` with add-if-absent.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Serve the apps directory's routes on this site (default true).
    pub apps: bool,
    pub routes: Vec<RouteConfig>,
    /// `allow`, `deny`: client addresses let in to this site (others get 403).
    pub rules: IpRules,
    /// `rate_limit`: requests per client address to this site.
    pub rate_limit: Option<RateLimit>,
}

/// `tls`: where a site's certificate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsConfig {
    /// `{ cert, key }`: PEM files, reloaded when they change.
    Files { cert: PathBuf, key: PathBuf },
    /// `"acme"`: obtained and renewed over ACME, as `[acme]` says.
    Acme,
}

/// `[acme]`: how certificates of `tls = "acme"` sites are obtained and renewed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The ACME server's directory URL, or `letsencrypt` / `letsencrypt-staging`.
    #[serde(default = "defaults::acme_directory")]
    pub directory: String,
    /// An email address the CA may write to about the certificates.
    pub contact: Option<String>,
    /// The account key, the certificates and their keys, the pending challenges and the
    /// lock of whichever node orders. Shared by the nodes of a load-balancer pair.
    #[serde(default = "defaults::acme_storage")]
    pub storage: PathBuf,
    /// PEM roots the ACME server's own certificate is checked against (a private
    /// ACME server); the system's roots without it.
    pub ca_bundle: Option<PathBuf>,
    /// `http-01` or `tls-alpn-01`; without it, HTTP-01 when there is a plain listener.
    pub challenge: Option<ChallengeKind>,
    /// The port the ACME server's HTTP-01 requests arrive on (80 on the internet).
    #[serde(default = "defaults::acme_http_port")]
    pub http_port: u16,
    /// The port the ACME server's TLS-ALPN-01 handshakes arrive on (443 on the internet).
    #[serde(default = "defaults::acme_tls_port")]
    pub tls_port: u16,
    /// `retry_min_ms`: the wait after a failed order; it doubles with each failure in
    /// a row, up to `retry_max_ms`.
    #[serde(
        rename = "retry_min_ms",
        default = "defaults::acme_retry_min",
        with = "serde_duration::millis"
    )]
    pub retry_min: Duration,
    #[serde(
        rename = "retry_max_ms",
        default = "defaults::acme_retry_max",
        with = "serde_duration::millis"
    )]
    pub retry_max: Duration,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            directory: defaults::acme_directory(),
            contact: None,
            storage: defaults::acme_storage(),
            ca_bundle: None,
            challenge: None,
            http_port: defaults::acme_http_port(),
            tls_port: defaults::acme_tls_port(),
            retry_min: defaults::acme_retry_min(),
            retry_max: defaults::acme_retry_max(),
        }
    }
}

/// The ACME challenge a node answers to prove it serves a name.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum ChallengeKind {
    /// A file at `/.well-known/acme-challenge/TOKEN` over plain HTTP.
    #[serde(rename = "http-01")]
    Http01,
    /// A certificate in a TLS handshake with ALPN `acme-tls/1`.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// Let's Encrypt's production and staging directories.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// One `routes` entry: a path prefix (in the normal form requests are matched in) and
/// what serves it. In the file: `{ path, app | root | redirect | upstream, status }`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub path: String,
    pub target: RouteTarget,
    /// `rate_limit`: requests per client address to this route.
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteTarget {
    /// An app of the apps directory, by name.
    App(String),
    /// A directory of static files.
    Root(PathBuf),
    /// An http(s) URL with a host, or a path from the root ("/"); the rest of the
    /// request's path is appended. `status` is 301, 302, 303, 307 or 308 (default).
    Redirect {
        to: String,
        status: http::StatusCode,
    },
    /// An `[[upstream]]` pool, by name.
    Upstream(String),
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum UnknownHost {
    /// The site marked `default = true` answers (404 if there is none).
    #[default]
    #[serde(rename = "default")]
    DefaultSite,
    #[serde(rename = "404")]
    NotFound,
    /// 421 Misdirected Request.
    #[serde(rename = "421")]
    Misdirected,
}

/// `[apps]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppsConfig {
    /// The apps directory (the command line's APPS_DIR wins).
    pub dir: Option<PathBuf>,
    /// Where apps' SQLite files live without `[database]`.
    pub data_dir: Option<PathBuf>,
    /// Instances alive at once across all apps, busy or idle: the size of the pool
    /// wasmtime reserves at start. Past it a request gets 503.
    #[serde(default = "defaults::max_instances")]
    pub max_instances: u32,
    /// Finished instances of `reuse_instances` apps kept for their next request,
    /// across all apps; the least recently used go first.
    #[serde(default = "defaults::max_idle_instances")]
    pub max_idle_instances: u32,
    /// `idle_instance_ttl_ms`: how long a finished instance is kept for reuse before it
    /// is dropped.
    #[serde(
        rename = "idle_instance_ttl_ms",
        default = "defaults::idle_instance_ttl",
        with = "serde_duration::millis"
    )]
    pub idle_instance_ttl: Duration,
    /// `tiered`: which compilers an app goes through on its way to serving.
    #[serde(default)]
    pub tiered: Tiering,
}

/// `[apps] tiered`: `true` (the default) serves a new or changed app as soon as the
/// baseline compiler (Winch) has compiled it and swaps in the optimised build
/// (Cranelift) when that is done; `false` compiles with Cranelift only, and the app
/// serves once that is done; `"baseline"` keeps apps on Winch's code and never
/// optimises (to measure or test the baseline tier on its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tiering {
    #[default]
    Tiered,
    OptimisedOnly,
    BaselineOnly,
}

impl<'de> Deserialize<'de> for Tiering {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Tiering;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(r#"true, false or "baseline""#)
            }
            fn visit_bool<E>(self, tiered: bool) -> Result<Tiering, E> {
                Ok(match tiered {
                    true => Tiering::Tiered,
                    false => Tiering::OptimisedOnly,
                })
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Tiering, E> {
                match value {
                    "baseline" => Ok(Tiering::BaselineOnly),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Default for AppsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            data_dir: None,
            max_instances: defaults::max_instances(),
            max_idle_instances: defaults::max_idle_instances(),
            idle_instance_ttl: defaults::idle_instance_ttl(),
            tiered: Tiering::default(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `header_read_timeout_ms`: time a client has to send a request head.
    #[serde(
        rename = "header_read_timeout_ms",
        default = "defaults::header_read_timeout",
        with = "serde_duration::millis"
    )]
    pub header_read_timeout: Duration,
    /// `tls_handshake_timeout_ms`: time a client has to finish the TLS handshake.
    #[serde(
        rename = "tls_handshake_timeout_ms",
        default = "defaults::tls_handshake_timeout",
        with = "serde_duration::millis"
    )]
    pub tls_handshake_timeout: Duration,
    /// `drain_timeout_ms`: on SIGTERM, how long requests in flight may take to finish.
    #[serde(
        rename = "drain_timeout_ms",
        default = "defaults::drain_timeout",
        with = "serde_duration::millis"
    )]
    pub drain_timeout: Duration,
    /// `max_header_bytes`: the request's header fields together (431 past it).
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// `max_headers`: header fields in one request (431 past it).
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    /// `max_uri_bytes`: the request target (414 past it).
    #[serde(default = "defaults::max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// `max_body_bytes`: a request body (413 past it; before reading when the length
    /// is declared, and before `100 Continue`).
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    /// `body_idle_timeout_ms`: the longest a request body may pause (408 past it).
    #[serde(
        rename = "body_idle_timeout_ms",
        default = "defaults::body_idle_timeout",
        with = "serde_duration::millis"
    )]
    pub body_idle_timeout: Duration,
    /// `request_timeout_ms`: time a client has to send a whole request, head and body
    /// (408 past it).
    #[serde(
        rename = "request_timeout_ms",
        default = "defaults::request_timeout",
        with = "serde_duration::millis"
    )]
    pub request_timeout: Duration,
    /// `keepalive_timeout_ms`: how long a connection (HTTP/1.1 or HTTP/2) may stay open
    /// with no request in flight.
    #[serde(
        rename = "keepalive_timeout_ms",
        default = "defaults::keepalive_timeout",
        with = "serde_duration::millis"
    )]
    pub keepalive_timeout: Duration,
    /// `max_requests_per_connection`: then the connection is closed (HTTP/1.1) or sent
    /// GOAWAY (HTTP/2), and the client opens another.
    #[serde(default = "defaults::max_requests_per_connection")]
    pub max_requests_per_connection: u64,
    /// `allow_underscores_in_headers`: header names with `_` are refused (400) unless
    /// set: some servers read `X_User` as `X-User`, which lets a client smuggle one past
    /// a proxy that sets the other.
    #[serde(default)]
    pub allow_underscores_in_headers: bool,
    /// `http2_max_concurrent_streams`: streams one HTTP/2 connection may have open.
    #[serde(default = "defaults::http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    /// `http2_max_glitches`: protocol misuse (resets, floods of control frames) one
    /// HTTP/2 connection may commit before it is sent GOAWAY and closed.
    #[serde(default = "defaults::http2_max_glitches")]
    pub http2_max_glitches: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: defaults::header_read_timeout(),
            tls_handshake_timeout: defaults::tls_handshake_timeout(),
            drain_timeout: defaults::drain_timeout(),
            max_header_bytes: defaults::max_header_bytes(),
            max_headers: defaults::max_headers(),
            max_uri_bytes: defaults::max_uri_bytes(),
            max_body_bytes: defaults::max_body_bytes(),
            body_idle_timeout: defaults::body_idle_timeout(),
            request_timeout: defaults::request_timeout(),
            keepalive_timeout: defaults::keepalive_timeout(),
            max_requests_per_connection: defaults::max_requests_per_connection(),
            allow_underscores_in_headers: false,
            http2_max_concurrent_streams: defaults::http2_max_concurrent_streams(),
            http2_max_glitches: defaults::http2_max_glitches(),
        }
    }
}

/// `[database]`: a primary and its replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// `primary`: `mysql://USER@HOST:PORT/DATABASE` (no password in the URL).
    pub primary: mysql_async::Opts,
    /// `replicas`, in the same form. Reads are spread over the healthy ones.
    pub replicas: Vec<mysql_async::Opts>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Connections kept open to each node while idle.
    pub pool_min: usize,
    /// Most connections to each node.
    pub pool_max: usize,
    /// `connect_timeout_ms`
    pub connect_timeout: Duration,
    /// `query_timeout_ms`
    pub query_timeout: Duration,
    /// `max_replica_lag_s`: a replica further behind the primary than this leaves
    /// rotation.
    pub max_replica_lag: Duration,
    /// `check_interval_ms`: how often replicas' replication state is checked.
    pub check_interval: Duration,
}

impl DatabaseConfig {
    /// The password, from the environment or a file; `None` when neither is set.
    /// Errors name where it was looked for, never the value.
    pub fn password(&self) -> anyhow::Result<Option<String>> {
        if let Some(var) = &self.password_env {
            let value = std::env::var(var).map_err(|_| {
                anyhow::anyhow!("database.password_env: environment variable {var} is not set")
            })?;
            return Ok(Some(value));
        }
        if let Some(file) = &self.password_file {
            let value = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("database.password_file: {}: {e}", file.display()))?;
            return Ok(Some(value.trim_end_matches(['\n', '\r']).to_string()));
        }
        Ok(None)
    }
}

// The `[apps]` defaults and bounds; the runtime's instance pool is sized by them.
/// Instances alive at once across all apps, busy or idle, by default.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;
/// The most `[apps] max_instances` may be: the engine's pool sizes some of its parts at
/// four per instance in a u32, and a million instances is far past any machine's memory.
pub const MAX_INSTANCES: u32 = 1_000_000;
/// Idle instances kept across all apps by default: a quarter of the pool, so idle ones
/// alone can never take the slots busy apps need.
pub const DEFAULT_MAX_IDLE_INSTANCES: u32 = 250;
/// How long an idle instance is kept by default.
pub const DEFAULT_IDLE_INSTANCE_TTL: Duration = Duration::from_secs(30);

mod defaults {
    use std::time::Duration;

    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn acme_directory() -> String {
        super::LETS_ENCRYPT.into()
    }
    pub fn acme_storage() -> std::path::PathBuf {
        "/var/lib/wharf/acme".into()
    }
    pub fn acme_http_port() -> u16 {
        80
    }
    pub fn acme_tls_port() -> u16 {
        443
    }
    /// Let's Encrypt allows 5 failed validations per name and hour: 5 minutes,
    /// doubling, stays under it.
    pub fn acme_retry_min() -> Duration {
        Duration::from_secs(300)
    }
    pub fn acme_retry_max() -> Duration {
        Duration::from_secs(6 * 3600)
    }
    pub fn tls_handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(30)
    }
    // Request limits: nginx's large_client_header_buffers (4 × 8 KiB), HAProxy's and
    // Envoy's 100 header fields, nginx's 60 s body and keep-alive timeouts.
    pub fn max_header_bytes() -> usize {
        32 * 1024
    }
    pub fn max_headers() -> usize {
        100
    }
    pub fn max_uri_bytes() -> usize {
        8 * 1024
    }
    pub fn max_body_bytes() -> u64 {
        8 * 1024 * 1024
    }
    pub fn body_idle_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn keepalive_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_requests_per_connection() -> u64 {
        1000
    }
    pub fn http2_max_concurrent_streams() -> u32 {
        100
    }
    pub fn http2_max_glitches() -> u32 {
        100
    }
    pub fn max_tracked_clients() -> usize {
        100_000
    }
    pub fn max_instances() -> u32 {
        super::DEFAULT_MAX_INSTANCES
    }
    pub fn max_idle_instances() -> u32 {
        super::DEFAULT_MAX_IDLE_INSTANCES
    }
    pub fn idle_instance_ttl() -> Duration {
        super::DEFAULT_IDLE_INSTANCE_TTL
    }
    pub fn drain_delay() -> Duration {
        Duration::from_secs(2)
    }
    pub fn pool_min() -> usize {
        1
    }
    pub fn pool_max() -> usize {
        16
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn query_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_replica_lag() -> Duration {
        Duration::from_secs(5)
    }
    pub fn check_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn admin_address() -> std::net::SocketAddr {
        ([127, 0, 0, 1], 9180).into()
    }
    pub fn admin_allow() -> Vec<String> {
        vec!["127.0.0.0/8".into(), "::1/128".into()]
    }
    pub fn yes() -> bool {
        true
    }
    pub fn redirect_status() -> u16 {
        308
    }

    // [[upstream]]: the values HAProxy and Envoy users are used to.
    pub fn max_connections() -> usize {
        256
    }
    pub fn upstream_connect_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn response_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn tunnel_idle_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub fn slow_start() -> Duration {
        Duration::from_secs(10)
    }
    pub fn panic_threshold_percent() -> u32 {
        50
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn health_check_path() -> String {
        "/".into()
    }
    pub fn health_check_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn health_check_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn rise() -> u32 {
        2
    }
    pub fn fall() -> u32 {
        3
    }
    pub fn consecutive_failures() -> u32 {
        5
    }
    pub fn base_ejection() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_ejection() -> Duration {
        Duration::from_secs(300)
    }
    pub fn max_ejected_percent() -> u32 {
        50
    }
    pub fn retry_attempts() -> u32 {
        1
    }
    pub fn budget_percent() -> u32 {
        20
    }
    pub fn budget_min() -> u32 {
        3
    }
}

/// Durations kept in the file as whole milliseconds or seconds (`*_ms`, `*_s` keys).
mod serde_duration {
    pub mod millis {
        use serde::{Deserialize, Deserializer};
        use std::time::Duration;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            u64::deserialize(d).map(Duration::from_millis)
        }
    }

    pub mod seconds {
        use serde::{Deserialize, Deserializer};
        use std::time::Duration;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            u64::deserialize(d).map(Duration::from_secs)
        }
    }
}

impl Config {
    /// Reads and checks `path`; errors name the file, each key and the reason.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse_in(&text, base).map_err(|e| {
            let lines: Vec<String> = format!("{e:#}")
                .lines()
                .map(|line| format!("{}: {line}", path.display()))
                .collect();
            anyhow::anyhow!("{}", lines.join("\n"))
        })
    }

    /// Parses and checks `text`, with relative paths taken from the current directory.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Self::parse_in(text, Path::new(""))
    }

    fn parse_in(text: &str, base: &Path) -> anyhow::Result<Self> {
        let mut file: file::File = from_toml(text)?;
        file.resolve_paths(base);
        check::check(file).map_err(|problems| anyhow::anyhow!("{}", problems.join("\n")))
    }
}

impl file::File {
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for site in &mut self.sites {
            site.root.as_mut().map(resolve);
            if let Some(file::Tls::Files { cert, key }) = &mut site.tls {
                resolve(cert);
                resolve(key);
            }
            for route in &mut site.routes {
                route.root.as_mut().map(resolve);
            }
        }
        if let Some(acme) = &mut self.acme {
            resolve(&mut acme.storage);
            acme.ca_bundle.as_mut().map(resolve);
        }
        self.apps.dir.as_mut().map(resolve);
        self.apps.data_dir.as_mut().map(resolve);
        if let Some(db) = &mut self.database {
            db.password_file.as_mut().map(resolve);
        }
        for upstream in &mut self.upstreams {
            upstream.ca.as_mut().map(resolve);
        }
        if let Some(admin) = &mut self.admin {
            admin.token_file.as_mut().map(resolve);
            admin.track_file.as_mut().map(resolve);
        }
    }
}

/// Reads TOML `text` into `T`, naming the key of a bad value: `listener[1].address:
/// invalid socket address syntax (line 5)`, on one line (toml's own message spans
/// several, with a source excerpt).
pub(crate) fn from_toml<T: DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    let line = |e: &toml::de::Error| {
        e.span()
            .map(|span| text[..span.start].matches('\n').count() + 1)
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| match line(&e) {
        Some(line) => anyhow::anyhow!("line {line}: {}", e.message()),
        None => anyhow::anyhow!("{}", e.message()),
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let e = e.into_inner();
        let at = line(&e)
            .map(|line| format!(" (line {line})"))
            .unwrap_or_default();
        match key.as_str() {
            "." => anyhow::anyhow!("{}{at}", e.message()),
            key => anyhow::anyhow!("{key}: {}{at}", e.message()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    /// A config with `listeners` (TOML) and one ACME site for `hosts`.
    fn with_acme(listeners: &str, section: &str, hosts: &str) -> Result<Config, String> {
        let text = format!("{listeners}\n{section}\n[[site]]\nhosts = {hosts}\ntls = \"acme\"\n");
        Config::parse(&text).map_err(|e| format!("{e:#}"))
    }

    const PLAIN_AND_TLS: &str =
        "[[listener]]\naddress = '0.0.0.0:80'\n[[listener]]\naddress = '0.0.0.0:443'\ntls = true\n";

    #[test]
    fn an_acme_site_gets_let_s_encrypt_and_http01_by_default() {
        let config = with_acme(PLAIN_AND_TLS, "", "['www.example.com']").unwrap();
        let acme = config.acme.unwrap();
        assert_eq!(acme.directory, LETS_ENCRYPT);
        assert_eq!(acme.challenge, Some(ChallengeKind::Http01));
        assert_eq!(acme.storage, Path::new("/var/lib/wharf/acme"));
        assert_eq!(config.sites[0].tls, Some(TlsConfig::Acme));
        // Without a plain listener, the challenge comes over TLS.
        let tls_only = "[[listener]]\naddress = '0.0.0.0:443'\ntls = true\n";
        let acme = with_acme(tls_only, "", "['www.example.com']")
            .unwrap()
            .acme
            .unwrap();
        assert_eq!(acme.challenge, Some(ChallengeKind::TlsAlpn01));
        let section = "[acme]\ndirectory = 'letsencrypt-staging'\ncontact = 'ops@example.com'\n";
        let acme = with_acme(PLAIN_AND_TLS, section, "['www.example.com']")
            .unwrap()
            .acme
            .unwrap();
        assert_eq!(acme.directory, LETS_ENCRYPT_STAGING);
        assert_eq!(acme.contact.as_deref(), Some("mailto:ops@example.com"));
    }

    #[test]
    fn an_acme_site_needs_names_a_public_ca_can_prove() {
        for (hosts, why) in [
            ("['*.example.com']", "wildcard"),
            ("['localhost']", "local name"),
            ("['app.test']", "private or reserved"),
            ("['printer.home.arpa']", "private or reserved"),
            ("['10.0.0.1']", "IP addresses"),
            ("[]", "names the hosts"),
        ] {
            let e = with_acme(PLAIN_AND_TLS, "", hosts).unwrap_err();
            assert!(
                e.contains("site[0].hosts") && e.contains(why),
                "{hosts}: {e}"
            );
        }
        let e = Config::parse("[[site]]\nhosts = ['a.example.com']\ntls = 'auto'\n").unwrap_err();
        assert!(format!("{e:#}").contains("site[0].tls: \"auto\""), "{e:#}");
    }

    #[test]
    fn acme_settings_and_listeners_are_checked() {
        let host = "['www.example.com']";
        let cases = [
            (
                PLAIN_AND_TLS,
                "[acme]\ndirectory = 'http://ca.example.com/dir'",
                "acme.directory",
            ),
            (PLAIN_AND_TLS, "[acme]\ncontact = 'ops'", "acme.contact"),
            (
                PLAIN_AND_TLS,
                "[acme]\nca_bundle = '/no/such/bundle.pem'",
                "acme.ca_bundle",
            ),
            (
                PLAIN_AND_TLS,
                "[acme]\nretry_min_ms = 0",
                "acme.retry_min_ms",
            ),
            (
                PLAIN_AND_TLS,
                "[acme]\nchallenge = 'dns-01'",
                "acme.challenge",
            ),
            (
                "[[listener]]\naddress = '0.0.0.0:80'",
                "",
                "needs a listener with tls = true",
            ),
            (
                "[[listener]]\naddress = '0.0.0.0:8080'\n[[listener]]\naddress = '0.0.0.0:443'\ntls = true",
                "",
                "http-01 needs a plain listener on port 80",
            ),
            (
                "[[listener]]\naddress = '0.0.0.0:8443'\ntls = true",
                "[acme]\nchallenge = 'tls-alpn-01'",
                "tls-alpn-01 needs a tls listener on port 443",
            ),
        ];
        for (listeners, section, want) in cases {
            let e = with_acme(listeners, section, host).unwrap_err();
            assert!(e.contains(want), "{section}: {e}");
        }
        // A private CA may validate on another port than 80.
        let moved = "[[listener]]\naddress = '0.0.0.0:8080'\n[[listener]]\naddress = '0.0.0.0:443'\ntls = true";
        with_acme(moved, "[acme]\nhttp_port = 8080", host).unwrap();
    }

    #[test]
    fn database_section() {
        let config = Config::parse(
            "[database]\nprimary = 'mysql://app@127.0.0.1:3306/app'\n\
             replicas = ['mysql://app@127.0.0.1:3307/app']\npassword_env = 'DB_PW'\n",
        )
        .unwrap();
        let db = config.database.unwrap();
        assert_eq!(db.replicas.len(), 1);
        assert_eq!(db.pool_max, 16);
    }

    #[test]
    fn errors_name_the_key() {
        assert!(err("[database]\nprimary = 'mysql://a@h/db'\npool_maxx = 3").contains("pool_maxx"));
        assert!(err("[databse]").contains("databse"));
        let msg = err("[database]\nprimary = 'mysql://a:secret@h/db'");
        assert!(
            msg.contains("database.primary") && !msg.contains("secret"),
            "{msg}"
        );
        assert!(
            err("[database]\nprimary = 'mysql://a@h/db'\nreplicas = ['mysql://h/db']")
                .contains("database.replicas[0]")
        );
        assert!(err("[database]\nprimary = 'mysql://a@h/db'\npool_max = 0").contains("pool_max"));
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_key_path_and_line() {
        let text = "[[listener]]\naddress = '127.0.0.1:1'\n\n[[listener]]\naddress = 'localhost'\n";
        assert_eq!(
            err(text),
            "listener[1].address: invalid socket address syntax (line 5)"
        );
        assert_eq!(
            err("[limits]\ndrain_timeout_ms = 'soon'"),
            "limits.drain_timeout_ms: invalid type: string \"soon\", expected u64 (line 2)"
        );
    }

    #[test]
    fn the_database_section_reports_every_problem() {
        let text = "[database]\nprimary = 'mysql://a:pw@h/db'\nreplicas = ['mysql://h/db', 'x']\n\
                    password_env = 'P'\npassword_file = 'p'\npool_min = 9\npool_max = 4\n\
                    query_timeout_ms = 0\n";
        let problems: Vec<String> = err(text).lines().map(String::from).collect();
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "database.primary",
                "database.replicas[0]",
                "database.replicas[1]",
                "database",
                "database.pool_min",
                "database.query_timeout_ms",
            ],
            "{problems:#?}"
        );
    }

    #[test]
    fn values_are_typed_when_the_file_is_read() {
        let config = Config::parse(
            "[limits]\nheader_read_timeout_ms = 1500\n\
             [admin]\nallow = ['10.0.0.0/8', '192.0.2.7']\ndrain_delay_ms = 250\n\
             [database]\nprimary = 'mysql://app@db:3306/app'\nmax_replica_lag_s = 7\n\
             [[site]]\nhosts = ['WWW.Example.com.', '*.example.com']\ncanonical_host = 'www.example.com'\n\
             routes = [{ path = '/old', redirect = '/new', status = 301 }, { path = '/api', app = 'api' }]\n",
        )
        .unwrap();
        assert_eq!(
            config.limits.header_read_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(config.limits.drain_timeout, Duration::from_secs(30));
        let admin = config.admin.unwrap();
        assert_eq!(
            admin.allow,
            [
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.0.2.7/32".parse().unwrap()
            ]
        );
        assert_eq!(admin.drain_delay, Duration::from_millis(250));
        let db = config.database.unwrap();
        assert_eq!(db.primary.ip_or_hostname(), "db");
        assert_eq!(db.max_replica_lag, Duration::from_secs(7));
        let site = &config.sites[0];
        assert_eq!(
            site.hosts,
            [
                HostPattern::Exact("www.example.com".into()),
                HostPattern::Wildcard("example.com".into())
            ]
        );
        assert_eq!(site.canonical_host.as_deref(), Some("www.example.com"));
        assert_eq!(
            site.routes[0].target,
            RouteTarget::Redirect {
                to: "/new".into(),
                status: http::StatusCode::MOVED_PERMANENTLY
            }
        );
        assert_eq!(site.routes[1].target, RouteTarget::App("api".into()));
    }

    #[test]
    fn listeners_on_port_zero_of_one_address_are_distinct() {
        let config = Config::parse(
            "[[listener]]\naddress = '127.0.0.1:0'\n[[listener]]\naddress = '127.0.0.1:0'\n\
             [admin]\naddress = '127.0.0.1:0'\n",
        )
        .unwrap();
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(
            err(
                "[[listener]]\naddress = '127.0.0.1:8080'\n[[listener]]\naddress = '127.0.0.1:8080'\n"
            ),
            "listener[1].address: 127.0.0.1:8080 is already listener[0]"
        );
    }

    /// The key of each problem `text` has, in order.
    fn keys(text: &str) -> Vec<String> {
        let problems = format!("{:#}", Config::parse(text).unwrap_err());
        problems
            .lines()
            .map(|p| p.split(": ").next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn an_upstream_with_every_key_is_typed_and_the_rest_are_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "").unwrap();
        let text = "[firewall]\ntrusted_proxies = ['10.0.0.0/8', '192.0.2.7']\n\
            [[site]]\nhosts = ['example.com']\nroutes = [{ path = '/', upstream = 'app' }]\n\
            [[upstream]]\nname = 'app'\nalgorithm = 'hash'\nhash_on = 'header:X-User'\n\
            http2 = true\nca = 'ca.pem'\nmax_connections = 8\nconnect_timeout_ms = 100\n\
            response_timeout_ms = 200\nidle_timeout_ms = 300\ntunnel_idle_timeout_ms = 400\n\
            slow_start_ms = 0\npanic_threshold_percent = 30\n\
            servers = [{ address = '127.0.0.2:8080', weight = 2 },\n\
                       { address = 'HTTPS://App3.Internal', backup = true }]\n\
            [upstream.health_check]\npath = '/readyz'\nport = 9180\ninterval_ms = 500\n\
            timeout_ms = 250\nexpect_status = 204\nrise = 1\nfall = 2\n\
            [upstream.outlier]\nconsecutive_failures = 0\nbase_ejection_ms = 1000\n\
            max_ejection_ms = 2000\nmax_ejected_percent = 100\n\
            [upstream.retry]\nattempts = 0\nbudget_percent = 10\nbudget_min = 1\n\
            [[upstream]]\nname = 'plain'\n[[upstream.servers]]\naddress = 'http://[::1]:81'\n";
        let path = dir.path().join("wharf.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.firewall.trusted_proxies,
            [
                "10.0.0.0/8".parse::<IpNet>().unwrap(),
                "192.0.2.7/32".parse().unwrap()
            ]
        );
        assert_eq!(
            config.sites[0].routes[0].target,
            RouteTarget::Upstream("app".into())
        );
        let app = &config.upstreams[0];
        assert_eq!(
            *app,
            UpstreamConfig {
                name: "app".into(),
                servers: vec![
                    ServerConfig {
                        address: BackendAddress {
                            tls: false,
                            host: "127.0.0.2".into(),
                            port: 8080
                        },
                        weight: 2,
                        backup: false
                    },
                    ServerConfig {
                        address: BackendAddress {
                            tls: true,
                            host: "app3.internal".into(),
                            port: 443
                        },
                        weight: 1,
                        backup: true
                    },
                ],
                algorithm: Algorithm::Hash(HashOn::Header(http::HeaderName::from_static("x-user"))),
                http2: true,
                ca: Some(dir.path().join("ca.pem")),
                max_connections: 8,
                connect_timeout: Duration::from_millis(100),
                response_timeout: Duration::from_millis(200),
                idle_timeout: Duration::from_millis(300),
                tunnel_idle_timeout: Duration::from_millis(400),
                health_check: Some(HealthCheckConfig {
                    path: "/readyz".into(),
                    port: Some(9180),
                    interval: Duration::from_millis(500),
                    timeout: Duration::from_millis(250),
                    expect_status: 204..=204,
                    rise: 1,
                    fall: 2,
                }),
                outlier: OutlierConfig {
                    consecutive_failures: 0,
                    base_ejection: Duration::from_secs(1),
                    max_ejection: Duration::from_secs(2),
                    max_ejected_percent: 100,
                },
                slow_start: Duration::ZERO,
                panic_threshold: 0.3,
                retry: RetryConfig {
                    attempts: 0,
                    budget_percent: 10,
                    budget_min: 1
                },
            }
        );
        let plain = &config.upstreams[1];
        assert_eq!(plain.servers[0].address.to_string(), "http://[::1]:81");
        assert_eq!(plain.algorithm, Algorithm::RoundRobin);
        assert_eq!(plain.max_connections, 256);
        assert_eq!(plain.connect_timeout, Duration::from_secs(1));
        assert_eq!(plain.response_timeout, Duration::from_secs(30));
        assert_eq!(plain.idle_timeout, Duration::from_secs(60));
        assert_eq!(plain.tunnel_idle_timeout, Duration::from_secs(300));
        assert_eq!(plain.slow_start, Duration::from_secs(10));
        assert_eq!(plain.panic_threshold, 0.5);
        assert_eq!(plain.health_check, None);
        assert_eq!(plain.outlier, OutlierConfig::default());
        assert_eq!(plain.outlier.consecutive_failures, 5);
        assert_eq!(plain.retry, RetryConfig::default());
        assert_eq!(
            (
                plain.retry.attempts,
                plain.retry.budget_percent,
                plain.retry.budget_min
            ),
            (1, 20, 3)
        );
    }

    #[test]
    fn a_health_check_without_keys_gets_the_defaults() {
        let config = Config::parse(
            "[[upstream]]\nname = 'a'\nservers = [{ address = '127.0.0.2:1' }]\n\
             algorithm = 'hash'\n[upstream.health_check]\n",
        )
        .unwrap();
        let upstream = &config.upstreams[0];
        assert_eq!(upstream.algorithm, Algorithm::Hash(HashOn::ClientIp));
        assert_eq!(
            upstream.health_check,
            Some(HealthCheckConfig {
                path: "/".into(),
                port: None,
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                expect_status: 200..=399,
                rise: 2,
                fall: 3,
            })
        );
    }

    #[test]
    fn site_headers_must_be_valid_and_not_frame_the_message() {
        let text = "[[site]]\nhosts = ['a.example']\n\
                    headers = { 'X Bad' = 'a', Transfer-Encoding = 'chunked', \
                    X-Frame-Options = \"DENY\\n\", X-Content-Type-Options = 'nosniff' }\n";
        assert_eq!(
            format!("{:#}", Config::parse(text).unwrap_err()),
            "site[0].headers.\"Transfer-Encoding\": frames the message; wharf writes it itself\n\
             site[0].headers.\"X Bad\": not a valid header name\n\
             site[0].headers.\"X-Frame-Options\": \"DENY\\n\" is not a valid header value \
             (visible ASCII, spaces and tabs)"
        );
        let good = "[[site]]\nhosts = ['a.example']\nheaders = { X-Frame-Options = 'DENY' }\n";
        let config = Config::parse(good).unwrap();
        assert_eq!(config.sites[0].headers.len(), 1);
        assert_eq!(config.sites[0].headers[0].0, "x-frame-options");
    }

    #[test]
    fn a_route_to_an_upstream_no_upstream_names_is_reported_with_its_key() {
        let text = "[[site]]\nhosts = ['a.example']\n\
                    routes = [{ path = '/x', app = 'x' }, { path = '/', upstream = 'ap' }]\n\
                    [[upstream]]\nname = 'app'\nservers = [{ address = '127.0.0.2:1' }]\n";
        assert_eq!(
            format!("{:#}", Config::parse(text).unwrap_err()),
            "site[0].routes[1].upstream: no [[upstream]] is named \"ap\""
        );
        let both = "[[site]]\nhosts = ['a.example']\n\
                    routes = [{ path = '/', upstream = 'app', app = 'x' }]\n\
                    [[upstream]]\nname = 'app'\nservers = [{ address = '127.0.0.2:1' }]\n";
        assert_eq!(
            format!("{:#}", Config::parse(both).unwrap_err()),
            "site[0].routes[0]: set only one of app, root, redirect or upstream"
        );
    }

    #[test]
    fn pools_report_every_problem_with_its_key() {
        let text = "[[upstream]]\nname = 'app'\nservers = [{ address = '127.0.0.2:1' }]\n\
                    [[upstream]]\nname = 'app'\nservers = []\n\
                    [[upstream]]\nname = 'a/b'\nservers = [{ address = '127.0.0.2:1', backup = true }]\n";
        assert_eq!(
            keys(text),
            [
                "upstream[1].name",
                "upstream[1].servers",
                "upstream[2].name",
                "upstream[2].servers",
            ]
        );
    }

    #[test]
    fn two_spellings_of_one_server_are_a_duplicate() {
        let text = "[[upstream]]\nname = 'app'\nservers = [{ address = '127.0.0.2:8080' },\n\
                    { address = '127.0.0.3:8080' }, { address = 'http://127.0.0.2:8080' }]\n";
        assert_eq!(
            format!("{:#}", Config::parse(text).unwrap_err()),
            "upstream[0].servers[2].address: http://127.0.0.2:8080 is already servers[0]"
        );
        let names = "[[upstream]]\nname = 'app'\nservers = [{ address = 'https://App.example' },\n\
                     { address = 'https://app.example:443/' }]\n";
        assert_eq!(keys(names), ["upstream[0].servers[1].address"]);
    }

    #[test]
    fn bad_server_addresses_and_weights_are_each_named() {
        let text = "[[upstream]]\nname = 'app'\nservers = [\n\
                    { address = 'ftp://h:21' },\n\
                    { address = 'http://h:80/app' },\n\
                    { address = 'http://h?x=1' },\n\
                    { address = '127.0.0.2' },\n\
                    { address = 'http://bad_host!:80' },\n\
                    { address = 'http://u@h:80' },\n\
                    { address = '127.0.0.2:0' },\n\
                    { address = '127.0.0.2:1', weight = 0 },\n\
                    { address = '127.0.0.2:2', weight = 1001 },\n\
                    { address = '127.0.0.2:3', weight = 1000 },\n\
                    ]\n";
        assert_eq!(
            keys(text),
            [
                "upstream[0].servers[0].address",
                "upstream[0].servers[1].address",
                "upstream[0].servers[2].address",
                "upstream[0].servers[3].address",
                "upstream[0].servers[4].address",
                "upstream[0].servers[5].address",
                "upstream[0].servers[6].address",
                "upstream[0].servers[7].weight",
                "upstream[0].servers[8].weight",
            ]
        );
        let problems = format!("{:#}", Config::parse(text).unwrap_err());
        assert!(
            problems.contains("\"ftp\" is not http or https"),
            "{problems}"
        );
        assert!(problems.contains("\"127.0.0.2\" has no port"), "{problems}");
        assert!(problems.contains("1001 is outside 1..=1000"), "{problems}");
    }

    #[test]
    fn hash_keys_are_checked_and_need_the_hash_algorithm() {
        let pool = |name: &str, lines: &str| {
            format!(
                "[[upstream]]\nname = '{name}'\nservers = [{{ address = '127.0.0.2:1' }}]\n{lines}\n"
            )
        };
        let text = [
            pool("a", "hash_on = 'client_ip'"),
            pool("b", "algorithm = 'hash'\nhash_on = 'header:bad header'"),
            pool("c", "algorithm = 'hash'\nhash_on = 'cookie:a;b'"),
            pool("d", "algorithm = 'hash'\nhash_on = 'query:id'"),
            pool("e", "algorithm = 'hash'\nhash_on = 'cookie:session'"),
        ]
        .concat();
        assert_eq!(
            keys(&text),
            [
                "upstream[0].hash_on",
                "upstream[1].hash_on",
                "upstream[2].hash_on",
                "upstream[3].hash_on",
            ]
        );
        assert!(
            err(&pool("x", "algorithm = 'fastest'"))
                .starts_with("upstream[0].algorithm: unknown variant `fastest`"),
        );
    }

    #[test]
    fn bounds_of_timeouts_percentages_and_checks_are_each_named() {
        let text = "[firewall]\ntrusted_proxies = ['10.0.0.0/33', 'proxy.example', '::1']\n\
            [[upstream]]\nname = 'app'\nservers = [{ address = '127.0.0.2:1' }]\n\
            ca = 'missing-ca.pem'\nmax_connections = 0\nconnect_timeout_ms = 0\n\
            response_timeout_ms = 0\nidle_timeout_ms = 0\ntunnel_idle_timeout_ms = 0\n\
            panic_threshold_percent = 101\n\
            [upstream.health_check]\npath = 'readyz'\nport = 0\ninterval_ms = 0\ntimeout_ms = 0\n\
            expect_status = 600\nrise = 0\nfall = 0\n\
            [upstream.outlier]\nbase_ejection_ms = 0\nmax_ejection_ms = 0\nmax_ejected_percent = 200\n\
            [upstream.retry]\nbudget_percent = 101\n";
        assert_eq!(
            keys(text),
            [
                "upstream[0].ca",
                "upstream[0].max_connections",
                "upstream[0].connect_timeout_ms",
                "upstream[0].response_timeout_ms",
                "upstream[0].idle_timeout_ms",
                "upstream[0].tunnel_idle_timeout_ms",
                "upstream[0].outlier.base_ejection_ms",
                "upstream[0].outlier.max_ejection_ms",
                "upstream[0].panic_threshold_percent",
                "upstream[0].outlier.max_ejected_percent",
                "upstream[0].retry.budget_percent",
                "upstream[0].health_check.path",
                "upstream[0].health_check.port",
                "upstream[0].health_check.interval_ms",
                "upstream[0].health_check.timeout_ms",
                "upstream[0].health_check.expect_status",
                "upstream[0].health_check.rise",
                "upstream[0].health_check.fall",
                "firewall.trusted_proxies[0]",
                "firewall.trusted_proxies[1]",
            ]
        );
        assert_eq!(
            keys(
                "[[upstream]]\nname = 'app'\nservers = [{ address = '127.0.0.2:1' }]\n\
                 [upstream.outlier]\nbase_ejection_ms = 5000\nmax_ejection_ms = 1000\n"
            ),
            ["upstream[0].outlier.max_ejection_ms"]
        );
    }

    #[test]
    fn a_server_address_parses_as_written_in_servers() {
        let parse = |s: &str| s.parse::<BackendAddress>().map(|a| a.to_string());
        assert_eq!(parse("127.0.0.2:8080").unwrap(), "http://127.0.0.2:8080");
        assert_eq!(parse("http%3A%2F%2Fx").ok(), None);
        assert_eq!(parse("https://[::1]").unwrap(), "https://[::1]:443");
        assert_eq!(
            parse("HTTP://Node.Example.:81").unwrap(),
            "http://node.example:81"
        );
    }

    #[test]
    fn admin_files_are_relative_to_the_configuration_file() {
        let config = Config::parse_in(
            "[admin]\ntoken_file = \"../admin-token\"\ntrack_file = \"ready\"\n",
            Path::new("/etc/wharf"),
        )
        .unwrap();
        let admin = config.admin.unwrap();
        assert_eq!(
            admin.token_file.unwrap(),
            Path::new("/etc/wharf/../admin-token")
        );
        assert_eq!(admin.track_file.unwrap(), Path::new("/etc/wharf/ready"));
    }
}
