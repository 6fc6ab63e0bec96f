//! From the file as written to the typed [`Config`]: every value parsed and every rule
//! checked in one pass, which collects all the problems, one line each, starting with
//! its key path.

use super::file::{self, File};
use super::{AdminConfig, Config, DatabaseConfig, RouteConfig, RouteTarget, SiteConfig};
use crate::http::{HostPattern, HostTable};
use http::StatusCode;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;

/// The statuses a redirect route may answer with.
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

pub(super) fn check(file: File) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    check_addresses(&file, &mut problems);
    let admin = file.admin.map(|admin| check_admin(admin, &mut problems));
    let apps = &file.apps;
    if apps.max_instances == 0 {
        problems.push("apps.max_instances: must be at least 1".into());
    }
    if apps.max_instances > super::MAX_INSTANCES {
        problems.push(format!(
            "apps.max_instances: {} is more than the most wharf supports ({})",
            apps.max_instances,
            super::MAX_INSTANCES
        ));
    }
    if apps.max_idle_instances > apps.max_instances {
        problems.push(format!(
            "apps.max_idle_instances: {} is more than apps.max_instances ({})",
            apps.max_idle_instances, apps.max_instances
        ));
    }
    let tls_listener = file.listeners.iter().any(|l| l.tls);
    if tls_listener && !file.sites.iter().any(|s| s.tls.is_some()) {
        problems.push("listener: a tls listener needs a site with [site.tls]".into());
    }
    let mut seen = SitesSeen {
        tls_listener,
        hosts: HostTable::default(),
        default: None,
    };
    let sites = file
        .sites
        .into_iter()
        .enumerate()
        .map(|(i, site)| check_site(i, site, &mut seen, &mut problems))
        .collect();
    let database = file
        .database
        .and_then(|db| check_database(db, &mut problems));
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        listeners: file.listeners,
        sites,
        unknown_host: file.unknown_host,
        apps: file.apps,
        limits: file.limits,
        database,
        admin,
        // Filled in by the [[upstream]] and [firewall] checks.
        upstreams: Vec::new(),
        firewall: Default::default(),
    })
}

/// Two listeners (or the admin listener) on one address cannot both bind, unless the
/// port is 0: each then gets a free port of its own.
fn check_addresses(file: &File, problems: &mut Vec<String>) {
    let mut addresses: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, listener) in file.listeners.iter().enumerate() {
        if listener.address.port() == 0 {
            continue;
        }
        if let Some(first) = addresses.insert(listener.address, i) {
            problems.push(format!(
                "listener[{i}].address: {} is already listener[{first}]",
                listener.address
            ));
        }
    }
    if let Some(admin) = &file.admin
        && let Some(i) = addresses.get(&admin.address)
    {
        problems.push(format!(
            "admin.address: {} is already listener[{i}]",
            admin.address
        ));
    }
}

fn check_admin(admin: file::Admin, problems: &mut Vec<String>) -> AdminConfig {
    let mut allow = Vec::new();
    for (i, net) in admin.allow.iter().enumerate() {
        match network(net) {
            Some(net) => allow.push(net),
            None => problems.push(format!(
                "admin.allow[{i}]: {net:?} is not an address or a network in CIDR form"
            )),
        }
    }
    AdminConfig {
        address: admin.address,
        allow,
        drain_delay: admin.drain_delay,
    }
}

/// A network in CIDR form, or a bare address as a network of one.
fn network(net: &str) -> Option<IpNet> {
    net.parse::<IpNet>()
        .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from))
        .ok()
}

/// What the sites checked so far have claimed, for the checks across sites.
struct SitesSeen {
    tls_listener: bool,
    /// Site index by host.
    hosts: HostTable<usize>,
    default: Option<usize>,
}

fn check_site(
    index: usize,
    site: file::Site,
    seen: &mut SitesSeen,
    problems: &mut Vec<String>,
) -> SiteConfig {
    let key = format!("site[{index}]");
    if site.hosts.is_empty() {
        problems.push(format!("{key}.hosts: a site needs at least one host"));
    }
    let mut patterns = Vec::new();
    for host in &site.hosts {
        let pattern = match host.parse::<HostPattern>() {
            Ok(pattern) => pattern,
            Err(why) => {
                problems.push(format!("{key}.hosts: {why}"));
                continue;
            }
        };
        if let Some(other) = seen.hosts.insert(pattern.clone(), index) {
            problems.push(format!(
                "{key}.hosts: \"{pattern}\" is already a host of site[{other}]"
            ));
        }
        patterns.push(pattern);
    }
    if site.default
        && let Some(other) = seen.default.replace(index)
    {
        problems.push(format!(
            "{key}.default: site[{other}] is already the default site"
        ));
    }
    let canonical_host = site.canonical_host.and_then(|canonical| {
        let exact = match canonical.parse::<HostPattern>() {
            Ok(pattern @ HostPattern::Exact(_)) if patterns.contains(&pattern) => pattern,
            _ => {
                problems.push(format!(
                    "{key}.canonical_host: {canonical:?} is not one of the site's hosts"
                ));
                return None;
            }
        };
        Some(exact.to_string())
    });
    if let Some(tls) = &site.tls {
        for (name, path) in [("cert", &tls.cert), ("key", &tls.key)] {
            if let Err(e) = std::fs::File::open(path) {
                problems.push(format!("{key}.tls.{name}: {}: {e}", path.display()));
            }
        }
    }
    if site.https_redirect && (site.tls.is_none() || !seen.tls_listener) {
        problems.push(format!(
            "{key}.https_redirect: needs [site.tls] and a tls listener"
        ));
    }
    if site.hsts_max_age.is_some() && site.tls.is_none() {
        problems.push(format!("{key}.hsts_max_age: needs [site.tls]"));
    }
    if let Some(root) = &site.root {
        check_dir(problems, &format!("{key}.root"), root);
    }
    let mut paths: HashMap<String, usize> = HashMap::new();
    let routes = site
        .routes
        .into_iter()
        .enumerate()
        .filter_map(|(j, route)| {
            let key = format!("{key}.routes[{j}]");
            let norm = route.path.trim_end_matches('/').to_string();
            let overlap = paths.insert(norm, j);
            check_route(&key, route, overlap, problems)
        })
        .collect();
    SiteConfig {
        hosts: patterns,
        default: site.default,
        canonical_host,
        https_redirect: site.https_redirect,
        hsts_max_age: site.hsts_max_age,
        tls: site.tls,
        root: site.root,
        cache_control: site.cache_control,
        apps: site.apps,
        routes,
    }
}

/// `overlap`: the earlier route of the site with the same path, if any.
fn check_route(
    key: &str,
    route: file::Route,
    overlap: Option<usize>,
    problems: &mut Vec<String>,
) -> Option<RouteConfig> {
    let path = route.path;
    if let Some(why) = crate::http::path::route_problem(&path) {
        problems.push(format!("{key}.path: {why}"));
    }
    if let Some(other) = overlap {
        problems.push(format!(
            "{key}.path: {path:?} overlaps routes[{other}], which has the same path"
        ));
    }
    if let Some(root) = &route.root {
        check_dir(problems, &format!("{key}.root"), root);
    }
    if let Some(to) = &route.redirect
        && to.contains(['?', '#'])
    {
        // The rest of the request's path is appended to the target: after a query it
        // would land in the query, after a fragment the browser would drop it.
        problems.push(format!(
            "{key}.redirect: {to:?} has a query or fragment; the rest of the request's \
             path is appended to the target, so it must end in its path"
        ));
    } else if let Some(to) = &route.redirect
        && !is_redirect_target(to)
    {
        problems.push(format!(
            "{key}.redirect: {to:?} must be an absolute URL (https://host/path) \
             or an absolute path (/path)"
        ));
    }
    let status = StatusCode::from_u16(route.status)
        .ok()
        .filter(|_| REDIRECT_STATUSES.contains(&route.status));
    if status.is_none() {
        problems.push(format!(
            "{key}.status: {} is not a redirect status (301, 302, 303, 307, 308)",
            route.status
        ));
    }
    let target = match (route.app, route.root, route.redirect) {
        (Some(app), None, None) => RouteTarget::App(app),
        (None, Some(root), None) => RouteTarget::Root(root),
        (None, None, Some(to)) => RouteTarget::Redirect {
            to,
            status: status?,
        },
        (None, None, None) => {
            problems.push(format!("{key}: set one of app, root or redirect"));
            return None;
        }
        _ => {
            problems.push(format!("{key}: set only one of app, root or redirect"));
            return None;
        }
    };
    Some(RouteConfig { path, target })
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

fn check_dir(problems: &mut Vec<String>, key: &str, dir: &Path) {
    if !dir.is_dir() {
        problems.push(format!("{key}: {} is not a directory", dir.display()));
    }
}

/// `None` when a URL is wrong; every problem is in `problems`.
fn check_database(db: file::Database, problems: &mut Vec<String>) -> Option<DatabaseConfig> {
    let mut url = |key: String, url: &str| -> Option<mysql_async::Opts> {
        let opts = match mysql_async::Opts::from_url(url) {
            Ok(opts) => opts,
            Err(e) => {
                problems.push(format!(
                    "{key}: {e} (expected mysql://USER@HOST:PORT/DATABASE)"
                ));
                return None;
            }
        };
        let before = problems.len();
        if opts.pass().is_some() {
            problems.push(format!(
                "{key}: the URL holds a password; put it in password_env or password_file"
            ));
        }
        if opts.user().is_none() {
            problems.push(format!("{key}: the URL names no user"));
        }
        if opts.db_name().is_none() {
            problems.push(format!("{key}: the URL names no database"));
        }
        (problems.len() == before).then_some(opts)
    };
    let primary = url("database.primary".into(), &db.primary);
    let replicas = db
        .replicas
        .iter()
        .enumerate()
        .filter_map(|(i, replica)| url(format!("database.replicas[{i}]"), replica))
        .collect();
    if db.password_env.is_some() && db.password_file.is_some() {
        problems.push("database: set password_env or password_file, not both".into());
    }
    if !(1..=1024).contains(&db.pool_max) {
        problems.push(format!(
            "database.pool_max: {} is outside 1..=1024",
            db.pool_max
        ));
    }
    if db.pool_min > db.pool_max {
        problems.push(format!(
            "database.pool_min: {} is above pool_max {}",
            db.pool_min, db.pool_max
        ));
    }
    for (key, duration) in [
        ("connect_timeout_ms", db.connect_timeout),
        ("query_timeout_ms", db.query_timeout),
        ("check_interval_ms", db.check_interval),
    ] {
        if duration.is_zero() {
            problems.push(format!("database.{key}: must be at least 1"));
        }
    }
    Some(DatabaseConfig {
        primary: primary?,
        replicas,
        password_env: db.password_env,
        password_file: db.password_file,
        pool_min: db.pool_min,
        pool_max: db.pool_max,
        connect_timeout: db.connect_timeout,
        query_timeout: db.query_timeout,
        max_replica_lag: db.max_replica_lag,
        check_interval: db.check_interval,
    })
}
