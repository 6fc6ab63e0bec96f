//! The file as serde reads it: the format users write. Values that can be wrong in more
//! ways than their TOML type (host names, networks, URLs, routes) are read as written
//! and turned into their types by [`super::check`], which reports every problem at once;
//! serde would stop at the first.

use super::{
    AppsConfig, LimitsConfig, ListenerConfig, TlsConfig, UnknownHost, defaults, serde_duration,
};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
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
    pub tls: Option<TlsConfig>,
    pub root: Option<PathBuf>,
    pub cache_control: Option<String>,
    #[serde(default = "defaults::yes")]
    pub apps: bool,
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// One `routes` entry: `{ path, app | root | redirect, status }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Route {
    pub path: String,
    pub app: Option<String>,
    pub root: Option<PathBuf>,
    pub redirect: Option<String>,
    #[serde(default = "defaults::redirect_status")]
    pub status: u16,
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
