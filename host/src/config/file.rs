//! The file as serde reads it: the format users write. Values that can be wrong in more
//! ways than their TOML type (host names, networks, URLs, routes) are read as written
//! and turned into their types by [`super::check`], which reports every problem at once;
//! serde would stop at the first.

use super::{
    AcmeConfig, AppsConfig, LimitsConfig, LogConfig, OutlierConfig, RateLimit, RetryConfig,
    UnknownHost, defaults, serde_duration,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    #[serde(default, rename = "site")]
    pub sites: Vec<Site>,
    #[serde(default)]
    pub unknown_host: UnknownHost,
    #[serde(default)]
    pub apps: AppsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    pub database: Option<Database>,
    pub admin: Option<Admin>,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<Upstream>,
    #[serde(default)]
    pub firewall: Firewall,
    #[serde(default)]
    pub log: LogConfig,
    pub acme: Option<AcmeConfig>,
}

/// A site's `tls`: `{ cert, key }`, or the word `"acme"` (checked by [`super::check`]).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum Tls {
    Files { cert: PathBuf, key: PathBuf },
    Word(String),
}

/// `[firewall]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Firewall {
    /// CIDRs or bare addresses, as are `allow` and `deny`.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    pub max_connections: Option<u32>,
    pub max_connections_per_ip: Option<u32>,
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "defaults::max_tracked_clients")]
    pub max_tracked_clients: usize,
}

impl Default for Firewall {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            max_connections: None,
            max_connections_per_ip: None,
            rate_limit: None,
            max_tracked_clients: defaults::max_tracked_clients(),
        }
    }
}

/// `[[listener]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Listener {
    pub address: SocketAddr,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `[[upstream]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Upstream {
    pub name: String,
    /// `servers = [{ address, weight, backup }]` or `[[upstream.servers]]` tables.
    #[serde(default)]
    pub servers: Vec<Server>,
    #[serde(default)]
    pub algorithm: Algorithm,
    /// `client_ip`, `header:NAME` or `cookie:NAME`; only with `algorithm = "hash"`.
    pub hash_on: Option<String>,
    #[serde(default)]
    pub http2: bool,
    pub ca: Option<PathBuf>,
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    #[serde(
        rename = "connect_timeout_ms",
        default = "defaults::upstream_connect_timeout",
        with = "serde_duration::millis"
    )]
    pub connect_timeout: Duration,
    #[serde(
        rename = "response_timeout_ms",
        default = "defaults::response_timeout",
        with = "serde_duration::millis"
    )]
    pub response_timeout: Duration,
    #[serde(
        rename = "idle_timeout_ms",
        default = "defaults::idle_timeout",
        with = "serde_duration::millis"
    )]
    pub idle_timeout: Duration,
    #[serde(
        rename = "tunnel_idle_timeout_ms",
        default = "defaults::tunnel_idle_timeout",
        with = "serde_duration::millis"
    )]
    pub tunnel_idle_timeout: Duration,
    #[serde(
        rename = "slow_start_ms",
        default = "defaults::slow_start",
        with = "serde_duration::millis"
    )]
    pub slow_start: Duration,
    #[serde(default = "defaults::panic_threshold_percent")]
    pub panic_threshold_percent: u32,
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub outlier: OutlierConfig,
    #[serde(default)]
    pub retry: RetryConfig,
}

/// `algorithm`; `hash` takes its key from `hash_on`.
#[derive(Debug, Default, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Algorithm {
    #[default]
    RoundRobin,
    LeastConnections,
    LeastLatency,
    Hash,
}

/// One of `servers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Server {
    pub address: String,
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    #[serde(default)]
    pub backup: bool,
}

/// `[upstream.health_check]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HealthCheck {
    #[serde(default = "defaults::health_check_path")]
    pub path: String,
    pub port: Option<u16>,
    #[serde(
        rename = "interval_ms",
        default = "defaults::health_check_interval",
        with = "serde_duration::millis"
    )]
    pub interval: Duration,
    #[serde(
        rename = "timeout_ms",
        default = "defaults::health_check_timeout",
        with = "serde_duration::millis"
    )]
    pub timeout: Duration,
    /// One status; without it, any of 200..=399.
    pub expect_status: Option<u16>,
    #[serde(default = "defaults::rise")]
    pub rise: u32,
    #[serde(default = "defaults::fall")]
    pub fall: u32,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Admin {
    #[serde(default = "defaults::admin_address")]
    pub address: SocketAddr,
    /// CIDRs or bare addresses.
    #[serde(default = "defaults::admin_allow")]
    pub allow: Vec<String>,
    #[serde(
        rename = "drain_delay_ms",
        default = "defaults::drain_delay",
        with = "serde_duration::millis"
    )]
    pub drain_delay: Duration,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub track_file: Option<PathBuf>,
}

/// `[[site]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Site {
    pub hosts: Vec<String>,
    #[serde(default)]
    pub default: bool,
    pub canonical_host: Option<String>,
    #[serde(default)]
    pub https_redirect: bool,
    pub hsts_max_age: Option<u64>,
    pub tls: Option<Tls>,
    pub root: Option<PathBuf>,
    pub cache_control: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "defaults::yes")]
    pub apps: bool,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    pub rate_limit: Option<RateLimit>,
}

/// One `routes` entry: `{ path, app | root | redirect | upstream, status }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Route {
    pub path: String,
    pub app: Option<String>,
    pub root: Option<PathBuf>,
    pub redirect: Option<String>,
    pub upstream: Option<String>,
    #[serde(default = "defaults::redirect_status")]
    pub status: u16,
    pub rate_limit: Option<RateLimit>,
}

/// `[database]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Database {
    pub primary: String,
    #[serde(default)]
    pub replicas: Vec<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default = "defaults::pool_min")]
    pub pool_min: usize,
    #[serde(default = "defaults::pool_max")]
    pub pool_max: usize,
    #[serde(
        rename = "connect_timeout_ms",
        default = "defaults::connect_timeout",
        with = "serde_duration::millis"
    )]
    pub connect_timeout: Duration,
    #[serde(
        rename = "query_timeout_ms",
        default = "defaults::query_timeout",
        with = "serde_duration::millis"
    )]
    pub query_timeout: Duration,
    #[serde(
        rename = "max_replica_lag_s",
        default = "defaults::max_replica_lag",
        with = "serde_duration::seconds"
    )]
    pub max_replica_lag: Duration,
    #[serde(
        rename = "check_interval_ms",
        default = "defaults::check_interval",
        with = "serde_duration::millis"
    )]
    pub check_interval: Duration,
}
