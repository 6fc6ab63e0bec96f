//! From the file as written to the typed [`Config`]: every value parsed and every rule
//! checked in one pass, which collects all the problems, one line each, starting with
//! its key path.

use super::file::{self, File};
use super::{
    AcmeConfig, AdminConfig, Algorithm, BackendAddress, ChallengeKind, Config, DatabaseConfig,
    FirewallConfig, HashOn, HealthCheckConfig, IpRules, ListenerConfig, RateLimit, RouteConfig,
    RouteTarget, ServerConfig, SiteConfig, TlsConfig, UpstreamConfig,
};
use crate::http::{HostPattern, HostTable};
use http::{HeaderName, HeaderValue, StatusCode};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The statuses a redirect route may answer with.
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// The heaviest a server may be: weights are shares, and a thousand to one is past any
/// real difference between machines while keeping the selection's arithmetic small.
const MAX_WEIGHT: u32 = 1000;

/// The statuses an active check may expect.
const STATUSES: std::ops::RangeInclusive<u16> = 100..=599;

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
        upstreams: file.upstreams.iter().map(|u| u.name.clone()).collect(),
    };
    let sites: Vec<SiteConfig> = file
        .sites
        .into_iter()
        .enumerate()
        .map(|(i, site)| check_site(i, site, &mut seen, &mut problems))
        .collect();
    let acme = check_acme(file.acme, &sites, &file.listeners, &mut problems);
    let database = file
        .database
        .and_then(|db| check_database(db, &mut problems));
    let upstreams = check_upstreams(file.upstreams, &mut problems);
    let firewall = check_firewall(file.firewall, &mut problems);
    if !(0.0..=1.0).contains(&file.log.access_sample) {
        problems.push(format!(
            "log.access_sample: {} is not a share between 0 and 1",
            file.log.access_sample
        ));
    }
    let listeners = file
        .listeners
        .into_iter()
        .enumerate()
        .map(|(i, listener)| ListenerConfig {
            address: listener.address,
            tls: listener.tls,
            proxy_protocol: listener.proxy_protocol,
            rules: ip_rules(
                &format!("listener[{i}]"),
                &listener.allow,
                &listener.deny,
                &mut problems,
            ),
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        listeners,
        sites,
        unknown_host: file.unknown_host,
        apps: file.apps,
        limits: file.limits,
        database,
        admin,
        upstreams,
        firewall,
        log: file.log,
        acme,
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
    if admin.token_env.is_some() && admin.token_file.is_some() {
        problems.push("admin: set token_env or token_file, not both".into());
    }
    AdminConfig {
        address: admin.address,
        allow: networks("admin.allow", &admin.allow, problems),
        drain_delay: admin.drain_delay,
        token_env: admin.token_env,
        token_file: admin.token_file,
        track_file: admin.track_file,
    }
}

fn check_firewall(firewall: file::Firewall, problems: &mut Vec<String>) -> FirewallConfig {
    for (key, cap) in [
        ("max_connections", firewall.max_connections),
        ("max_connections_per_ip", firewall.max_connections_per_ip),
    ] {
        if cap == Some(0) {
            problems.push(format!("firewall.{key}: must be at least 1"));
        }
    }
    if firewall.max_tracked_clients == 0 {
        problems.push("firewall.max_tracked_clients: must be at least 1".into());
    }
    FirewallConfig {
        trusted_proxies: networks(
            "firewall.trusted_proxies",
            &firewall.trusted_proxies,
            problems,
        ),
        rules: ip_rules("firewall", &firewall.allow, &firewall.deny, problems),
        max_connections: firewall.max_connections,
        max_connections_per_ip: firewall.max_connections_per_ip,
        rate_limit: rate_limit("firewall.rate_limit", firewall.rate_limit, problems),
        max_tracked_clients: firewall.max_tracked_clients,
    }
}

/// The `allow` and `deny` lists of the table at `key`.
fn ip_rules(key: &str, allow: &[String], deny: &[String], problems: &mut Vec<String>) -> IpRules {
    IpRules {
        allow: networks(&format!("{key}.allow"), allow, problems),
        deny: networks(&format!("{key}.deny"), deny, problems),
    }
}

/// The most requests per second a rate limit may name: past a million a second per
/// client, a limit limits nothing.
const MAX_RATE: f64 = 1_000_000.0;

fn rate_limit(
    key: &str,
    limit: Option<RateLimit>,
    problems: &mut Vec<String>,
) -> Option<RateLimit> {
    let limit = limit?;
    if !(limit.per_second > 0.0 && limit.per_second <= MAX_RATE) {
        problems.push(format!(
            "{key}.per_second: {} must be more than 0 and at most {MAX_RATE}",
            limit.per_second
        ));
        return None;
    }
    if limit.burst == Some(0) {
        problems.push(format!("{key}.burst: must be at least 1"));
        return None;
    }
    Some(limit)
}

/// The networks of a list of CIDRs or bare addresses; `key` names the list.
fn networks(key: &str, nets: &[String], problems: &mut Vec<String>) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, net) in nets.iter().enumerate() {
        match network(net) {
            Some(net) => out.push(net),
            None => problems.push(format!(
                "{key}[{i}]: {net:?} is not an address or a network in CIDR form"
            )),
        }
    }
    out
}

/// A network in CIDR form, or a bare address as a network of one.
fn network(net: &str) -> Option<IpNet> {
    net.parse::<IpNet>()
        .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from))
        .ok()
}

/// `[acme]`, when a site has `tls = "acme"`: the directory, the contact, and a listener
/// the chosen challenge can arrive on. The challenge is chosen here when not given.
fn check_acme(
    acme: Option<AcmeConfig>,
    sites: &[SiteConfig],
    listeners: &[file::Listener],
    problems: &mut Vec<String>,
) -> Option<AcmeConfig> {
    let wanted = sites.iter().any(|s| s.tls == Some(TlsConfig::Acme));
    if !wanted {
        return acme;
    }
    let mut acme = acme.unwrap_or_default();
    match acme.directory.as_str() {
        "letsencrypt" => acme.directory = super::LETS_ENCRYPT.into(),
        "letsencrypt-staging" => acme.directory = super::LETS_ENCRYPT_STAGING.into(),
        url if url.starts_with("https://") && url.parse::<http::Uri>().is_ok() => {}
        url => problems.push(format!(
            "acme.directory: {url:?} is not an https:// URL (RFC 8555 servers are HTTPS), \
             letsencrypt or letsencrypt-staging"
        )),
    }
    if let Some(contact) = &acme.contact {
        let address = contact.strip_prefix("mailto:").unwrap_or(contact);
        match address.split_once('@') {
            Some((user, domain)) if !user.is_empty() && domain.contains('.') => {
                acme.contact = Some(format!("mailto:{address}"))
            }
            _ => problems.push(format!("acme.contact: {contact:?} is not an email address")),
        }
    }
    if let Some(bundle) = &acme.ca_bundle
        && let Err(e) = std::fs::File::open(bundle)
    {
        problems.push(format!("acme.ca_bundle: {}: {e}", bundle.display()));
    }
    if acme.retry_min.is_zero() || acme.retry_max < acme.retry_min {
        problems.push("acme.retry_min_ms: must be above 0 and at most retry_max_ms".into());
    }
    let on = |tls: bool, port: u16| {
        listeners
            .iter()
            .any(|l| l.tls == tls && l.address.port() == port)
    };
    if !listeners.iter().any(|l| l.tls) {
        problems.push("acme: a site with tls = \"acme\" needs a listener with tls = true".into());
    }
    let challenge = *acme
        .challenge
        .get_or_insert(match listeners.iter().any(|l| !l.tls) {
            true => ChallengeKind::Http01,
            false => ChallengeKind::TlsAlpn01,
        });
    match challenge {
        ChallengeKind::Http01 if !on(false, acme.http_port) => problems.push(format!(
            "acme.challenge: http-01 needs a plain listener on port {} (acme.http_port), \
             where the ACME server's requests arrive",
            acme.http_port
        )),
        ChallengeKind::TlsAlpn01 if !on(true, acme.tls_port) => problems.push(format!(
            "acme.challenge: tls-alpn-01 needs a tls listener on port {} (acme.tls_port), \
             where the ACME server's handshakes arrive",
            acme.tls_port
        )),
        _ => {}
    }
    Some(acme)
}

/// Why a public ACME server could not issue a certificate for `host`, if it could not.
fn acme_name(host: &HostPattern) -> Result<(), &'static str> {
    let HostPattern::Exact(name) = host else {
        return Err("HTTP-01 and TLS-ALPN-01 cannot prove a wildcard; name each host");
    };
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("an ACME site needs host names, not IP addresses");
    }
    let Some((_, tld)) = name.rsplit_once('.') else {
        return Err("an ACME site needs public host names (with a dot), not a local name");
    };
    // The special-use names of RFC 6761 and RFC 8375 and the usual private suffixes,
    // which no public CA issues for.
    const PRIVATE: [&str; 9] = [
        "localhost",
        "local",
        "internal",
        "lan",
        "home",
        "test",
        "invalid",
        "example",
        "onion",
    ];
    if PRIVATE.contains(&tld) || name.ends_with(".home.arpa") || tld.parse::<u32>().is_ok() {
        return Err("an ACME site needs public host names, not a private or reserved one");
    }
    Ok(())
}

/// What the sites checked so far have claimed, for the checks across sites.
struct SitesSeen {
    tls_listener: bool,
    /// Site index by host.
    hosts: HostTable<usize>,
    default: Option<usize>,
    /// The names of the `[[upstream]]`s, which routes may name.
    upstreams: HashSet<String>,
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
    let tls = match site.tls {
        None => None,
        Some(file::Tls::Files {
            cert,
            key: key_file,
        }) => {
            for (name, path) in [("cert", &cert), ("key", &key_file)] {
                if let Err(e) = std::fs::File::open(path) {
                    problems.push(format!("{key}.tls.{name}: {}: {e}", path.display()));
                }
            }
            Some(TlsConfig::Files {
                cert,
                key: key_file,
            })
        }
        Some(file::Tls::Word(word)) if word == "acme" => {
            if patterns.is_empty() {
                problems.push(format!(
                    "{key}.hosts: a site with tls = \"acme\" names the hosts to certify"
                ));
            }
            for pattern in &patterns {
                if let Err(why) = acme_name(pattern) {
                    problems.push(format!("{key}.hosts: \"{pattern}\": {why}"));
                }
            }
            Some(TlsConfig::Acme)
        }
        Some(file::Tls::Word(word)) => {
            problems.push(format!(
                "{key}.tls: {word:?} is neither \"acme\" nor {{ cert, key }}"
            ));
            None
        }
    };
    if site.https_redirect && (tls.is_none() || !seen.tls_listener) {
        problems.push(format!(
            "{key}.https_redirect: needs [site.tls] and a tls listener"
        ));
    }
    if site.hsts_max_age.is_some() && tls.is_none() {
        problems.push(format!("{key}.hsts_max_age: needs [site.tls]"));
    }
    if let Some(root) = &site.root {
        check_dir(problems, &format!("{key}.root"), root);
    }
    let headers = response_headers(&key, site.headers, problems);
    let mut paths: HashMap<String, usize> = HashMap::new();
    let routes = site
        .routes
        .into_iter()
        .enumerate()
        .filter_map(|(j, route)| {
            let key = format!("{key}.routes[{j}]");
            let norm = route.path.trim_end_matches('/').to_string();
            let overlap = paths.insert(norm, j);
            check_route(&key, route, overlap, &seen.upstreams, problems)
        })
        .collect();
    SiteConfig {
        hosts: patterns,
        default: site.default,
        canonical_host,
        https_redirect: site.https_redirect,
        hsts_max_age: site.hsts_max_age,
        tls,
        root: site.root,
        cache_control: site.cache_control,
        headers,
        apps: site.apps,
        routes,
        rules: ip_rules(&key, &site.allow, &site.deny, problems),
        rate_limit: rate_limit(&format!("{key}.rate_limit"), site.rate_limit, problems),
    }
}

/// A site's `headers`: names and values HTTP allows, and none of the fields that frame
/// the message or the connection (those are the server's to write).
fn response_headers(
    key: &str,
    headers: BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Vec<(HeaderName, HeaderValue)> {
    const FRAMING: [&str; 8] = [
        "connection",
        "content-length",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    headers
        .into_iter()
        .filter_map(|(name, value)| {
            let field = format!("{key}.headers.{name:?}");
            let parsed = match HeaderName::from_bytes(name.as_bytes()) {
                Ok(parsed) => parsed,
                Err(_) => {
                    problems.push(format!("{field}: not a valid header name"));
                    return None;
                }
            };
            if FRAMING.contains(&parsed.as_str()) {
                problems.push(format!(
                    "{field}: frames the message; wharf writes it itself"
                ));
                return None;
            }
            match HeaderValue::from_str(&value) {
                Ok(value) => Some((parsed, value)),
                Err(_) => {
                    problems.push(format!(
                        "{field}: {value:?} is not a valid header value (visible ASCII, spaces and tabs)"
                    ));
                    None
                }
            }
        })
        .collect()
}

/// `overlap`: the earlier route of the site with the same path, if any; `upstreams`: the
/// names of the file's `[[upstream]]`s.
fn check_route(
    key: &str,
    route: file::Route,
    overlap: Option<usize>,
    upstreams: &HashSet<String>,
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
    if let Some(name) = &route.upstream
        && !upstreams.contains(name)
    {
        problems.push(format!("{key}.upstream: no [[upstream]] is named {name:?}"));
    }
    let target = match (route.app, route.root, route.redirect, route.upstream) {
        (Some(app), None, None, None) => RouteTarget::App(app),
        (None, Some(root), None, None) => RouteTarget::Root(root),
        (None, None, Some(to), None) => RouteTarget::Redirect {
            to,
            status: status?,
        },
        (None, None, None, Some(name)) => RouteTarget::Upstream(name),
        (None, None, None, None) => {
            problems.push(format!("{key}: set one of app, root, redirect or upstream"));
            return None;
        }
        _ => {
            problems.push(format!(
                "{key}: set only one of app, root, redirect or upstream"
            ));
            return None;
        }
    };
    let rate_limit = rate_limit(&format!("{key}.rate_limit"), route.rate_limit, problems);
    Some(RouteConfig {
        path,
        target,
        rate_limit,
    })
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

fn check_upstreams(
    upstreams: Vec<file::Upstream>,
    problems: &mut Vec<String>,
) -> Vec<UpstreamConfig> {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut checked = Vec::new();
    for (i, upstream) in upstreams.into_iter().enumerate() {
        let key = format!("upstream[{i}]");
        if let Some(first) = names.insert(upstream.name.clone(), i) {
            problems.push(format!(
                "{key}.name: {:?} is already upstream[{first}]",
                upstream.name
            ));
        }
        checked.push(check_upstream(&key, upstream, problems));
    }
    checked
}

fn check_upstream(
    key: &str,
    upstream: file::Upstream,
    problems: &mut Vec<String>,
) -> UpstreamConfig {
    // The name is a segment of the admin API's paths and a metrics label value.
    let name_ok = !upstream.name.is_empty()
        && upstream
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        problems.push(format!(
            "{key}.name: {:?} must be letters, digits, '-', '_' or '.'",
            upstream.name
        ));
    }
    let servers = check_servers(key, &upstream.servers, problems);
    let hash_on = match &upstream.hash_on {
        Some(text) => check_hash_on(key, text, problems),
        None => Some(HashOn::default()),
    };
    let algorithm = match upstream.algorithm {
        file::Algorithm::RoundRobin => Algorithm::RoundRobin,
        file::Algorithm::LeastConnections => Algorithm::LeastConnections,
        file::Algorithm::LeastLatency => Algorithm::LeastLatency,
        file::Algorithm::Hash => Algorithm::Hash(hash_on.unwrap_or_default()),
    };
    if upstream.hash_on.is_some() && upstream.algorithm != file::Algorithm::Hash {
        problems.push(format!("{key}.hash_on: needs algorithm = \"hash\""));
    }
    if let Some(ca) = &upstream.ca
        && let Err(e) = std::fs::File::open(ca)
    {
        problems.push(format!("{key}.ca: {}: {e}", ca.display()));
    }
    if upstream.max_connections == 0 {
        problems.push(format!("{key}.max_connections: must be at least 1"));
    }
    let outlier = &upstream.outlier;
    let retry = &upstream.retry;
    for (name, duration) in [
        ("connect_timeout_ms", upstream.connect_timeout),
        ("response_timeout_ms", upstream.response_timeout),
        ("idle_timeout_ms", upstream.idle_timeout),
        ("tunnel_idle_timeout_ms", upstream.tunnel_idle_timeout),
        ("outlier.base_ejection_ms", outlier.base_ejection),
        ("outlier.max_ejection_ms", outlier.max_ejection),
    ] {
        at_least_1ms(problems, &format!("{key}.{name}"), duration);
    }
    if outlier.max_ejection < outlier.base_ejection {
        problems.push(format!(
            "{key}.outlier.max_ejection_ms: {} is below base_ejection_ms {}",
            outlier.max_ejection.as_millis(),
            outlier.base_ejection.as_millis()
        ));
    }
    for (name, percent) in [
        ("panic_threshold_percent", upstream.panic_threshold_percent),
        ("outlier.max_ejected_percent", outlier.max_ejected_percent),
        ("retry.budget_percent", retry.budget_percent),
    ] {
        if percent > 100 {
            problems.push(format!("{key}.{name}: {percent} is more than 100"));
        }
    }
    let health_check = upstream
        .health_check
        .map(|check| check_health_check(key, check, problems));
    UpstreamConfig {
        name: upstream.name,
        servers,
        algorithm,
        http2: upstream.http2,
        ca: upstream.ca,
        max_connections: upstream.max_connections,
        connect_timeout: upstream.connect_timeout,
        response_timeout: upstream.response_timeout,
        idle_timeout: upstream.idle_timeout,
        tunnel_idle_timeout: upstream.tunnel_idle_timeout,
        health_check,
        outlier: upstream.outlier,
        slow_start: upstream.slow_start,
        panic_threshold: f64::from(upstream.panic_threshold_percent) / 100.0,
        retry: upstream.retry,
    }
}

fn check_servers(
    key: &str,
    servers: &[file::Server],
    problems: &mut Vec<String>,
) -> Vec<ServerConfig> {
    if servers.is_empty() {
        problems.push(format!("{key}.servers: a pool needs at least one server"));
    } else if servers.iter().all(|s| s.backup) {
        problems.push(format!(
            "{key}.servers: every server is a backup; backups serve only when no other is up"
        ));
    }
    let mut seen: HashMap<BackendAddress, usize> = HashMap::new();
    let mut checked = Vec::new();
    for (j, server) in servers.iter().enumerate() {
        let key = format!("{key}.servers[{j}]");
        if !(1..=MAX_WEIGHT).contains(&server.weight) {
            problems.push(format!(
                "{key}.weight: {} is outside 1..={MAX_WEIGHT}",
                server.weight
            ));
        }
        let address = match backend_address(&server.address) {
            Ok(address) => address,
            Err(why) => {
                problems.push(format!("{key}.address: {why}"));
                continue;
            }
        };
        if let Some(first) = seen.insert(address.clone(), j) {
            problems.push(format!(
                "{key}.address: {address} is already servers[{first}]"
            ));
        }
        checked.push(ServerConfig {
            address,
            weight: server.weight,
            backup: server.backup,
        });
    }
    checked
}

/// `127.0.0.2:8080`, `http://host[:port]` or `https://host[:port]` (a lone trailing
/// slash allowed), in normal form; the error says what is wrong with `text`.
pub(super) fn backend_address(text: &str) -> Result<BackendAddress, String> {
    let (tls, rest) = match text.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => (Some(false), rest),
            "https" => (Some(true), rest),
            _ => {
                return Err(format!(
                    "{text:?}: the scheme {scheme:?} is not http or https"
                ));
            }
        },
        None => (None, text),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(format!(
            "{text:?} has a path or query; a server is [http:// or https://]host:port only"
        ));
    }
    if rest.contains('@') {
        return Err(format!(
            "{text:?} holds a user name; a server is host:port only"
        ));
    }
    let authority: http::uri::Authority = rest
        .parse()
        .map_err(|_| format!("{text:?} is not host:port"))?;
    let port = match (authority.port_u16(), tls) {
        (Some(0), _) => return Err(format!("{text:?}: port 0 is not a port to connect to")),
        (Some(port), _) => port,
        (None, None) => {
            return Err(format!(
                "{text:?} has no port (or put http:// or https:// in front)"
            ));
        }
        (None, Some(false)) => 80,
        (None, Some(true)) => 443,
    };
    let host = authority.host();
    let host = match host.parse::<HostPattern>() {
        Ok(HostPattern::Exact(host)) => host,
        _ => {
            return Err(format!(
                "{text:?}: {host:?} is not a host name or an IP address"
            ));
        }
    };
    Ok(BackendAddress {
        tls: tls.unwrap_or(false),
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
    })
}

fn check_hash_on(key: &str, text: &str, problems: &mut Vec<String>) -> Option<HashOn> {
    let on = if text == "client_ip" {
        HashOn::ClientIp
    } else if let Some(name) = text.strip_prefix("header:") {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => HashOn::Header(name),
            Err(_) => {
                problems.push(format!("{key}.hash_on: {name:?} is not a header name"));
                return None;
            }
        }
    } else if let Some(name) = text.strip_prefix("cookie:") {
        // A cookie name is an HTTP token (RFC 6265).
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        if !token {
            problems.push(format!("{key}.hash_on: {name:?} is not a cookie name"));
            return None;
        }
        HashOn::Cookie(name.to_string())
    } else {
        problems.push(format!(
            "{key}.hash_on: {text:?} is not client_ip, header:NAME or cookie:NAME"
        ));
        return None;
    };
    Some(on)
}

fn check_health_check(
    key: &str,
    check: file::HealthCheck,
    problems: &mut Vec<String>,
) -> HealthCheckConfig {
    let key = format!("{key}.health_check");
    if !check.path.starts_with('/') {
        problems.push(format!("{key}.path: {:?} must start with /", check.path));
    } else if check.path.parse::<http::uri::PathAndQuery>().is_err() {
        problems.push(format!(
            "{key}.path: {:?} is not a request path",
            check.path
        ));
    }
    if check.port == Some(0) {
        problems.push(format!("{key}.port: 0 is not a port to connect to"));
    }
    at_least_1ms(problems, &format!("{key}.interval_ms"), check.interval);
    at_least_1ms(problems, &format!("{key}.timeout_ms"), check.timeout);
    let expect_status = match check.expect_status {
        Some(status) if !STATUSES.contains(&status) => {
            problems.push(format!(
                "{key}.expect_status: {status} is outside {}..={}",
                STATUSES.start(),
                STATUSES.end()
            ));
            status..=status
        }
        Some(status) => status..=status,
        None => 200..=399,
    };
    for (name, count) in [("rise", check.rise), ("fall", check.fall)] {
        if count == 0 {
            problems.push(format!("{key}.{name}: must be at least 1"));
        }
    }
    HealthCheckConfig {
        path: check.path,
        port: check.port,
        interval: check.interval,
        timeout: check.timeout,
        expect_status,
        rise: check.rise,
        fall: check.fall,
    }
}

fn at_least_1ms(problems: &mut Vec<String>, key: &str, duration: Duration) {
    if duration.is_zero() {
        problems.push(format!("{key}: must be at least 1"));
    }
}
