//! `wharf.toml`: the node's configuration. Every key is optional and unknown keys are
//! errors that name the key; `wharf serve apps/` runs without a file at all.
//!
//! Parsing stops at the first syntax error or unknown key (that is what the TOML
//! reader gives); the checks after it report every problem at once, each with its key
//! path (`site[1].tls.cert`). Relative paths are relative to the file's directory.

use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to accept connections. Default: one plain listener from `--listen`.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Virtual hosts. Without any, every host gets the apps directory's routes.
    #[serde(default, rename = "site")]
    pub sites: Vec<SiteConfig>,
    /// What a request for a host no site names gets.
    #[serde(default)]
    pub unknown_host: UnknownHost,
    #[serde(default)]
    pub apps: AppsConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The MySQL/MariaDB cluster apps query. Without it, apps get SQLite files.
    pub database: Option<DatabaseConfig>,
    /// Health checks on a listener of their own. Without it, there is none.
    pub admin: Option<AdminConfig>,
}

/// `[admin]`: the operator's listener, apart from the sites: `/healthz` and `/readyz`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "defaults::admin_address")]
    pub address: SocketAddr,
    /// Client networks let in, as CIDRs ("10.0.0.0/8", "::1/128"); others get 403.
    #[serde(default = "defaults::admin_allow")]
    pub allow: Vec<String>,
    /// On SIGTERM, how long the listeners keep accepting after `/readyz` turns 503, so
    /// balancers checking it stop sending before connections are refused.
    #[serde(default = "defaults::drain_delay_ms")]
    pub drain_delay_ms: u64,
}

impl AdminConfig {
    /// The `allow` networks. [`Config::load`] has refused any entry that is not one.
    pub fn networks(&self) -> Vec<ipnet::IpNet> {
        self.allow
            .iter()
            .filter_map(|net| network(net).ok())
            .collect()
    }
}

/// A network in CIDR form, or a bare address as a network of one.
fn network(net: &str) -> Result<ipnet::IpNet, String> {
    net.parse::<ipnet::IpNet>()
        .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{net:?} is not an address or a network in CIDR form"))
}

/// `[[listener]]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// HTTPS, with each site's certificate chosen by SNI.
    #[serde(default)]
    pub tls: bool,
}

/// `[[site]]`: one virtual host.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Host names (`www.foobar.com`, or `*.foobar.com` for any one-label subdomain).
    pub hosts: Vec<String>,
    /// Serves requests for hosts no site names (with `unknown_host = "default"`).
    #[serde(default)]
    pub default: bool,
    /// The site's own name among `hosts`: requests for the others are redirected
    /// (308) to it, e.g. `foobar.com` → `www.foobar.com`.
    pub canonical_host: Option<String>,
    /// Requests over plain HTTP are redirected (308) to HTTPS.
    #[serde(default)]
    pub https_redirect: bool,
    /// `Strict-Transport-Security: max-age=N` on HTTPS responses.
    pub hsts_max_age: Option<u64>,
    pub tls: Option<TlsConfig>,
    /// Static files served at `/` (below every route).
    pub root: Option<PathBuf>,
    /// Cache-Control for static files.
    pub cache_control: Option<String>,
    /// Serve the apps directory's routes on this site.
    #[serde(default = "yes")]
    pub apps: bool,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One `routes` entry: a path prefix and exactly one target.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub path: String,
    /// An app of the apps directory, by name.
    pub app: Option<String>,
    /// A directory of static files.
    pub root: Option<PathBuf>,
    /// Where to redirect: an http(s) URL with a host, or a path from the root ("/").
    /// The rest of the request's path is appended.
    pub redirect: Option<String>,
    /// Status of the redirect (301, 302, 303, 307 or 308).
    #[serde(default = "permanent")]
    pub status: u16,
}

fn permanent() -> u16 {
    308
}

/// An http(s) URL with a host, or a path from the root. Anything else a browser resolves
/// against the page or takes for another host: `evil.example` is a relative path,
/// `//evil.example` and `/\evil.example` (a backslash counts as a slash) are other hosts.
fn is_redirect_target(to: &str) -> bool {
    if to.contains('\\') {
        return false;
    }
    match to.parse::<http::Uri>() {
        Ok(uri) if uri.scheme().is_some() => {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
        }
        Ok(_) => to.starts_with('/') && !to.starts_with("//"),
        Err(_) => false,
    }
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
    /// How long a finished instance is kept for reuse before it is dropped.
    #[serde(default = "defaults::idle_instance_ttl_ms")]
    pub idle_instance_ttl_ms: u64,
}

impl Default for AppsConfig {
    fn default() -> Self {
        Self {
            dir: None,
            data_dir: None,
            max_instances: defaults::max_instances(),
            max_idle_instances: defaults::max_idle_instances(),
            idle_instance_ttl_ms: defaults::idle_instance_ttl_ms(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Time a client has to send a request head.
    #[serde(default = "defaults::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Time a client has to finish the TLS handshake.
    #[serde(default = "defaults::tls_handshake_timeout_ms")]
    pub tls_handshake_timeout_ms: u64,
    /// On SIGTERM, how long requests in flight may take to finish.
    #[serde(default = "defaults::drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: defaults::header_read_timeout_ms(),
            tls_handshake_timeout_ms: defaults::tls_handshake_timeout_ms(),
            drain_timeout_ms: defaults::drain_timeout_ms(),
        }
    }
}

/// `[database]`: a primary and its replicas.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `mysql://USER@HOST:PORT/DATABASE` of the primary (no password in the URL).
    pub primary: String,
    /// The replicas, in the same form. Reads are spread over the healthy ones.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Connections kept open to each node while idle.
    #[serde(default = "defaults::pool_min")]
    pub pool_min: usize,
    /// Most connections to each node.
    #[serde(default = "defaults::pool_max")]
    pub pool_max: usize,
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "defaults::query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// A replica further behind the primary than this (seconds) leaves rotation.
    #[serde(default = "defaults::max_replica_lag_s")]
    pub max_replica_lag_s: u64,
    /// How often replicas' replication state is checked.
    #[serde(default = "defaults::check_interval_ms")]
    pub check_interval_ms: u64,
}

mod defaults {
    pub fn header_read_timeout_ms() -> u64 {
        10_000
    }
    pub fn tls_handshake_timeout_ms() -> u64 {
        10_000
    }
    pub fn drain_timeout_ms() -> u64 {
        30_000
    }
    pub fn max_instances() -> u32 {
        crate::runtime::DEFAULT_MAX_INSTANCES
    }
    pub fn max_idle_instances() -> u32 {
        crate::runtime::DEFAULT_MAX_IDLE_INSTANCES
    }
    pub fn idle_instance_ttl_ms() -> u64 {
        crate::runtime::DEFAULT_IDLE_INSTANCE_TTL.as_millis() as u64
    }
    pub fn drain_delay_ms() -> u64 {
        2_000
    }
    pub fn pool_min() -> usize {
        1
    }
    pub fn pool_max() -> usize {
        16
    }
    pub fn connect_timeout_ms() -> u64 {
        1_000
    }
    pub fn query_timeout_ms() -> u64 {
        10_000
    }
    pub fn max_replica_lag_s() -> u64 {
        5
    }
    pub fn check_interval_ms() -> u64 {
        1_000
    }
    pub fn admin_address() -> std::net::SocketAddr {
        ([127, 0, 0, 1], 9180).into()
    }
    pub fn admin_allow() -> Vec<String> {
        vec!["127.0.0.0/8".into(), "::1/128".into()]
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
        let mut config: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        config.resolve_paths(base);
        let problems = config.problems();
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("\n"));
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for site in &mut self.sites {
            site.root.as_mut().map(resolve);
            if let Some(tls) = &mut site.tls {
                resolve(&mut tls.cert);
                resolve(&mut tls.key);
            }
            for route in &mut site.routes {
                route.root.as_mut().map(resolve);
            }
        }
        self.apps.dir.as_mut().map(resolve);
        self.apps.data_dir.as_mut().map(resolve);
        if let Some(db) = &mut self.database {
            db.password_file.as_mut().map(resolve);
        }
    }

    /// Every problem, one line each, starting with its key path.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut addresses = HashMap::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            if let Some(first) = addresses.insert(listener.address, i) {
                problems.push(format!(
                    "listener[{i}].address: {} is already listener[{first}]",
                    listener.address
                ));
            }
        }
        if let Some(admin) = &self.admin {
            if let Some(i) = addresses.get(&admin.address) {
                problems.push(format!(
                    "admin.address: {} is already listener[{i}]",
                    admin.address
                ));
            }
            for (i, net) in admin.allow.iter().enumerate() {
                if let Err(why) = network(net) {
                    problems.push(format!("admin.allow[{i}]: {why}"));
                }
            }
        }
        if self.apps.max_instances == 0 {
            problems.push("apps.max_instances: must be at least 1".into());
        }
        if self.apps.max_instances > crate::runtime::MAX_INSTANCES {
            problems.push(format!(
                "apps.max_instances: {} is more than the most wharf supports ({})",
                self.apps.max_instances,
                crate::runtime::MAX_INSTANCES
            ));
        }
        if self.apps.max_idle_instances > self.apps.max_instances {
            problems.push(format!(
                "apps.max_idle_instances: {} is more than apps.max_instances ({})",
                self.apps.max_idle_instances, self.apps.max_instances
            ));
        }
        let tls_listener = self.listeners.iter().any(|l| l.tls);
        if tls_listener && !self.sites.iter().any(|s| s.tls.is_some()) {
            problems.push("listener: a tls listener needs a site with [site.tls]".into());
        }
        let mut hosts: HashMap<String, usize> = HashMap::new();
        let mut default = None;
        for (i, site) in self.sites.iter().enumerate() {
            let key = format!("site[{i}]");
            if site.hosts.is_empty() {
                problems.push(format!("{key}.hosts: a site needs at least one host"));
            }
            for host in &site.hosts {
                let host = host.to_ascii_lowercase();
                if let Err(why) = check_host_name(&host) {
                    problems.push(format!("{key}.hosts: {host:?} {why}"));
                } else if let Some(other) = hosts.insert(host.clone(), i) {
                    problems.push(format!(
                        "{key}.hosts: {host:?} is already a host of site[{other}]"
                    ));
                }
            }
            if site.default
                && let Some(other) = default.replace(i)
            {
                problems.push(format!(
                    "{key}.default: site[{other}] is already the default site"
                ));
            }
            if let Some(canonical) = &site.canonical_host
                && !site.hosts.iter().any(|h| h.eq_ignore_ascii_case(canonical))
            {
                problems.push(format!(
                    "{key}.canonical_host: {canonical:?} is not one of the site's hosts"
                ));
            }
            if let Some(tls) = &site.tls {
                for (name, path) in [("cert", &tls.cert), ("key", &tls.key)] {
                    if let Err(e) = std::fs::File::open(path) {
                        problems.push(format!("{key}.tls.{name}: {}: {e}", path.display()));
                    }
                }
            }
            if site.https_redirect && (site.tls.is_none() || !tls_listener) {
                problems.push(format!(
                    "{key}.https_redirect: needs [site.tls] and a tls listener"
                ));
            }
            if site.hsts_max_age.is_some() && site.tls.is_none() {
                problems.push(format!("{key}.hsts_max_age: needs [site.tls]"));
            }
            if let Some(root) = &site.root {
                check_dir(&mut problems, &format!("{key}.root"), root);
            }
            let mut paths: HashMap<String, usize> = HashMap::new();
            for (j, route) in site.routes.iter().enumerate() {
                let key = format!("{key}.routes[{j}]");
                if !route.path.starts_with('/') || route.path.contains(['?', '#', ' ']) {
                    problems.push(format!(
                        "{key}.path: {:?} must be a path starting with '/'",
                        route.path
                    ));
                } else if let Some(why) = crate::gateway::path::route_problem(&route.path) {
                    problems.push(format!("{key}.path: {why}"));
                }
                let norm = route.path.trim_end_matches('/').to_string();
                if let Some(other) = paths.insert(norm, j) {
                    problems.push(format!(
                        "{key}.path: {:?} overlaps routes[{other}], which has the same path",
                        route.path
                    ));
                }
                let targets = [
                    route.app.is_some(),
                    route.root.is_some(),
                    route.redirect.is_some(),
                ];
                match targets.iter().filter(|t| **t).count() {
                    1 => {}
                    0 => problems.push(format!("{key}: set one of app, root or redirect")),
                    _ => problems.push(format!("{key}: set only one of app, root or redirect")),
                }
                if let Some(root) = &route.root {
                    check_dir(&mut problems, &format!("{key}.root"), root);
                }
                if let Some(to) = &route.redirect
                    && !is_redirect_target(to)
                {
                    problems.push(format!(
                        "{key}.redirect: {to:?} must be an absolute URL (https://host/path) \
                         or an absolute path (/path)"
                    ));
                }
                if ![301, 302, 303, 307, 308].contains(&route.status) {
                    problems.push(format!(
                        "{key}.status: {} is not a redirect status (301, 302, 303, 307, 308)",
                        route.status
                    ));
                }
            }
        }
        if let Some(db) = &self.database
            && let Err(e) = db.validate()
        {
            problems.push(e.to_string());
        }
        problems
    }
}

/// A host name as a site names it: DNS labels, optionally `*.` in front.
fn check_host_name(host: &str) -> Result<(), &'static str> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err("is not a valid host name");
    }
    Ok(())
}

fn check_dir(problems: &mut Vec<String>, key: &str, dir: &Path) {
    if !dir.is_dir() {
        problems.push(format!("{key}: {} is not a directory", dir.display()));
    }
}

impl DatabaseConfig {
    fn validate(&self) -> anyhow::Result<()> {
        let urls = std::iter::once(("database.primary".to_string(), &self.primary)).chain(
            self.replicas
                .iter()
                .enumerate()
                .map(|(i, url)| (format!("database.replicas[{i}]"), url)),
        );
        for (key, url) in urls {
            let opts = mysql_async::Opts::from_url(url).map_err(|e| {
                anyhow::anyhow!("{key}: {e} (expected mysql://USER@HOST:PORT/DATABASE)")
            })?;
            anyhow::ensure!(
                opts.pass().is_none(),
                "{key}: the URL holds a password; put it in password_env or password_file"
            );
            anyhow::ensure!(opts.user().is_some(), "{key}: the URL names no user");
            anyhow::ensure!(opts.db_name().is_some(), "{key}: the URL names no database");
        }
        anyhow::ensure!(
            !(self.password_env.is_some() && self.password_file.is_some()),
            "database: set password_env or password_file, not both"
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.pool_max),
            "database.pool_max: {} is outside 1..=1024",
            self.pool_max
        );
        anyhow::ensure!(
            self.pool_min <= self.pool_max,
            "database.pool_min: {} is above pool_max {}",
            self.pool_min,
            self.pool_max
        );
        for (key, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("query_timeout_ms", self.query_timeout_ms),
            ("check_interval_ms", self.check_interval_ms),
        ] {
            anyhow::ensure!(ms > 0, "database.{key}: must be at least 1");
        }
        Ok(())
    }

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

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    pub fn check_interval(&self) -> Duration {
        Duration::from_millis(self.check_interval_ms)
    }
}

/// toml's message spans several lines (with a source excerpt); logs want one, with the
/// line number.
pub fn toml_error(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let msg = e.message();
    match e.span() {
        Some(span) => {
            let line = text[..span.start].matches('\n').count() + 1;
            anyhow::anyhow!("line {line}: {msg}")
        }
        None => anyhow::anyhow!("{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
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
}
