//! Virtual hosts: which site a request is for (by Host, checked against SNI under
//! TLS), and within the site which target serves its path (longest prefix wins).

use super::GatewayError;
use super::static_files::StaticFiles;
use crate::config::{ChallengeKind, Config, RateLimit, RouteTarget, SiteConfig, UnknownHost};
use crate::firewall::{RateLimiter, Rules};
use crate::http::{HostTable, route_matches};
use crate::metrics::{DenyRule, FirewallMetrics, Kind, Metrics, RateScope, RouteMetrics};
use crate::net::tls::{Challenges, HTTP01_PREFIX};
use crate::proxy::{Pool, Upstreams};
use crate::runtime::{App, Registry};
use http::{HeaderName, HeaderValue, StatusCode};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// Every site of the configuration, indexed by host name. Built whole from a config
/// and swapped whole on reload.
pub struct Sites {
    sites: Vec<Site>,
    /// Site index by host pattern.
    hosts: HostTable<usize>,
    default: Option<usize>,
    unknown: UnknownHost,
    /// The port HTTPS redirects point at (omitted when 443).
    https_port: Option<u16>,
    /// Where HTTP-01 answers are, when a site's certificate comes over ACME.
    acme: Option<Challenges>,
}

pub struct Site {
    pub name: String,
    canonical_host: Option<String>,
    https_redirect: bool,
    hsts: Option<HeaderValue>,
    /// Added to each answer that lacks them.
    headers: Arc<[(HeaderName, HeaderValue)]>,
    apps: bool,
    /// Explicit routes, longest prefix first.
    routes: Vec<Route>,
    /// Static files for every path nothing else serves, mounted at "/".
    root: Option<(Arc<StaticFiles>, Arc<str>)>,
    /// Client addresses let in.
    rules: Rules,
    rate: Option<Arc<RateLimiter>>,
    metrics: SiteMetrics,
}

/// A site's handles: for what the site answers itself (403, 429, 404, redirects to
/// HTTPS), its static root, and each app it has served, made on the app's first
/// request (apps come and go without the sites being rebuilt).
struct SiteMetrics {
    node: Arc<Metrics>,
    answers: Arc<RouteMetrics>,
    root: Arc<RouteMetrics>,
    apps: RwLock<HashMap<Arc<str>, Arc<RouteMetrics>>>,
}

impl SiteMetrics {
    fn new(node: &Arc<Metrics>, site: &str) -> Self {
        Self {
            answers: node.route(site, Kind::None, ""),
            root: node.route(site, Kind::Static, "/"),
            apps: RwLock::default(),
            node: node.clone(),
        }
    }

    fn firewall(&self) -> &FirewallMetrics {
        &self.node.firewall
    }

    /// The handles of `app` on this site: one read lock and a hash of the name, the
    /// price of apps loading without the sites being rebuilt.
    fn app(&self, site: &str, app: &Arc<str>) -> Arc<RouteMetrics> {
        if let Some(metrics) = self.apps.read().unwrap().get(app) {
            return metrics.clone();
        }
        let mut apps = self.apps.write().unwrap();
        apps.entry(app.clone())
            .or_insert_with(|| self.node.route(site, Kind::App, app))
            .clone()
    }
}

struct Route {
    prefix: Arc<str>,
    target: Configured,
    rate: Option<Arc<RateLimiter>>,
    metrics: Arc<RouteMetrics>,
}

/// What serves a request.
pub enum Target {
    App(Arc<App>),
    Static {
        files: Arc<StaticFiles>,
        prefix: Arc<str>,
    },
    Redirect {
        to: String,
        status: StatusCode,
    },
    Upstream(Arc<Pool>),
    /// The answer to an ACME server's HTTP-01 request.
    AcmeAnswer(String),
}

/// What the site makes of a request before routing: serve it, or redirect it.
pub enum Decision<'a> {
    Serve(&'a Site),
    Redirect(String),
}

enum Configured {
    App(String),
    Static(Arc<StaticFiles>),
    Redirect { to: String, status: StatusCode },
    Upstream(Arc<Pool>),
}

impl Sites {
    /// The key authorization a plain HTTP request for `path` is answered with: an ACME
    /// server validating a name (HTTP-01). Comes before the site's redirects, rules and
    /// routes; nothing else is ever served under the challenge prefix then.
    pub fn acme_answer(&self, tls: bool, path: &str) -> Option<Result<String, ()>> {
        let token = path.strip_prefix(HTTP01_PREFIX).filter(|_| !tls)?;
        Some(self.acme.as_ref()?.http01(token).ok_or(()))
    }

    /// No `[[site]]` in the configuration: one site for every host, serving the apps.
    pub fn catch_all(metrics: &Arc<Metrics>) -> Self {
        Self {
            sites: vec![Site {
                metrics: SiteMetrics::new(metrics, "*"),
                name: "*".into(),
                canonical_host: None,
                https_redirect: false,
                hsts: None,
                headers: Arc::new([]),
                apps: true,
                routes: Vec::new(),
                root: None,
                rules: Rules::default(),
                rate: None,
            }],
            hosts: HostTable::default(),
            default: Some(0),
            unknown: UnknownHost::DefaultSite,
            https_port: None,
            acme: None,
        }
    }

    /// The sites of a checked configuration; `https_port` is the port of the TLS
    /// listener as bound, for HTTPS redirects; `upstreams` the pools built from the same
    /// configuration. Fails only on what the file check cannot see in advance (a static
    /// root vanishing in between). A rate limiter whose limit did not change is taken
    /// over from the same site (by name) and route (by path) of `previous`, so a reload
    /// does not hand every client a fresh burst.
    pub fn from_config(
        config: &Config,
        https_port: Option<u16>,
        upstreams: &Upstreams,
        previous: Option<&Sites>,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        if config.sites.is_empty() {
            return Ok(Self::catch_all(metrics));
        }
        let mut sites = Self {
            sites: Vec::new(),
            hosts: HostTable::default(),
            default: None,
            unknown: config.unknown_host,
            https_port: https_port.filter(|&p| p != 443),
            acme: config
                .acme
                .as_ref()
                .filter(|a| a.challenge == Some(ChallengeKind::Http01))
                .map(|a| Challenges::in_storage(&a.storage)),
        };
        for (i, site) in config.sites.iter().enumerate() {
            for host in &site.hosts {
                sites.hosts.insert(host.clone(), i);
            }
            if site.default {
                sites.default = Some(i);
            }
            let name = site
                .hosts
                .first()
                .map(ToString::to_string)
                .unwrap_or_default();
            let previous = previous.and_then(|p| p.sites.iter().find(|s| s.name == name));
            let capacity = config.firewall.max_tracked_clients;
            let built = Site::new(name, site, upstreams, previous, capacity, metrics)?;
            sites.sites.push(built);
        }
        Ok(sites)
    }

    /// The site named `host` (no port), if any.
    fn named(&self, host: &str) -> Option<usize> {
        self.hosts.get(host).copied()
    }

    /// The site for a request to `host`; under TLS, `sni` must name the same site
    /// (a connection set up for one site does not serve another's requests).
    pub fn find(&self, host: Option<&str>, sni: Option<&str>) -> Result<&Site, GatewayError> {
        let named = host.and_then(|h| self.named(h));
        if let Some(sni) = sni
            && self.named(sni) != named
        {
            return Err(GatewayError::Misdirected);
        }
        let index = match (named, self.unknown) {
            (Some(i), _) => i,
            (None, UnknownHost::DefaultSite) => self.default.ok_or(GatewayError::UnknownHost)?,
            (None, UnknownHost::NotFound) => return Err(GatewayError::UnknownHost),
            (None, UnknownHost::Misdirected) => return Err(GatewayError::Misdirected),
        };
        Ok(&self.sites[index])
    }

    /// Redirects the site asks for: plain HTTP to HTTPS, other hosts to the canonical
    /// one. `host` is the request's host without port.
    pub fn decide<'a>(
        &self,
        site: &'a Site,
        host: Option<&str>,
        tls: bool,
        path_and_query: &str,
    ) -> Decision<'a> {
        let wanted = site.canonical_host.as_deref().or(host);
        let Some(wanted) = wanted else {
            return Decision::Serve(site);
        };
        let upgrade = !tls && site.https_redirect;
        if !upgrade && host == Some(wanted) {
            return Decision::Serve(site);
        }
        let location = if upgrade || tls {
            match self.https_port {
                Some(port) => format!("https://{wanted}:{port}{path_and_query}"),
                None => format!("https://{wanted}{path_and_query}"),
            }
        } else {
            format!("http://{wanted}{path_and_query}")
        };
        Decision::Redirect(location)
    }
}

impl Site {
    fn new(
        name: String,
        config: &SiteConfig,
        upstreams: &Upstreams,
        previous: Option<&Site>,
        capacity: usize,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let limiter = |limit: Option<RateLimit>, previous: Option<&Arc<RateLimiter>>| {
            limit.map(|limit| RateLimiter::reuse(previous, limit, capacity))
        };
        let mut routes = Vec::new();
        for route in &config.routes {
            let (kind, label) = match &route.target {
                RouteTarget::App(app) => (Kind::App, app.as_str()),
                RouteTarget::Root(_) => (Kind::Static, route.path.as_str()),
                RouteTarget::Redirect { .. } => (Kind::Redirect, route.path.as_str()),
                RouteTarget::Upstream(name) => (Kind::Upstream, name.as_str()),
            };
            let target = match &route.target {
                RouteTarget::App(app) => Configured::App(app.clone()),
                RouteTarget::Root(root) => Configured::Static(Arc::new(StaticFiles::new(
                    root,
                    config.cache_control.as_deref(),
                )?)),
                RouteTarget::Redirect { to, status } => Configured::Redirect {
                    to: to.clone(),
                    status: *status,
                },
                RouteTarget::Upstream(name) => Configured::Upstream(
                    upstreams
                        .get(name)
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("no upstream is named {name}"))?,
                ),
            };
            let before = previous
                .and_then(|p| p.routes.iter().find(|r| *r.prefix == *route.path))
                .and_then(|r| r.rate.as_ref());
            routes.push(Route {
                prefix: route.path.as_str().into(),
                target,
                rate: limiter(route.rate_limit, before),
                metrics: metrics.route(&name, kind, label),
            });
        }
        // Longest prefix first, so the first match is the most specific.
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        let root = match &config.root {
            Some(root) => Some((
                Arc::new(StaticFiles::new(root, config.cache_control.as_deref())?),
                Arc::from("/"),
            )),
            None => None,
        };
        Ok(Self {
            metrics: SiteMetrics::new(metrics, &name),
            name,
            rules: Rules::new(&config.rules),
            rate: limiter(config.rate_limit, previous.and_then(|p| p.rate.as_ref())),
            canonical_host: config.canonical_host.clone(),
            https_redirect: config.https_redirect,
            hsts: config
                .hsts_max_age
                .map(|age| HeaderValue::from_str(&format!("max-age={age}")).unwrap()),
            headers: config.headers.iter().cloned().collect(),
            apps: config.apps,
            routes,
            root,
        })
    }

    pub fn hsts(&self) -> Option<&HeaderValue> {
        self.hsts.as_ref()
    }

    /// The site's `headers`, for every answer that does not set them itself.
    pub fn headers(&self) -> &Arc<[(HeaderName, HeaderValue)]> {
        &self.headers
    }

    /// Whether `client` may ask this site anything now: its rules (403), then its rate
    /// limit (429).
    pub fn admit(&self, client: IpAddr) -> Result<(), GatewayError> {
        if !self.rules.admits(client) {
            self.metrics.firewall().denied(DenyRule::Site);
            return Err(GatewayError::Forbidden);
        }
        self.limit(self.rate.as_deref(), client, RateScope::Site)
    }

    /// The handles of what the site answers itself.
    pub fn answers(&self) -> &Arc<RouteMetrics> {
        &self.metrics.answers
    }

    fn limit(
        &self,
        rate: Option<&RateLimiter>,
        client: IpAddr,
        scope: RateScope,
    ) -> Result<(), GatewayError> {
        match rate.map(|rate| rate.check(client)) {
            Some(Err(retry_after)) => {
                self.metrics.firewall().rate_limited(scope);
                Err(GatewayError::TooManyRequests { retry_after })
            }
            _ => Ok(()),
        }
    }

    /// What serves `path` on this site for `client`, and its handles: the longest
    /// matching prefix among the site's routes and (if the site serves apps) the apps'
    /// routes, else the static root. A route of the site's own with a rate limit checks
    /// `client` against it.
    pub fn route(
        &self,
        path: &str,
        registry: &Registry,
        client: IpAddr,
    ) -> Result<(Target, Arc<RouteMetrics>), GatewayError> {
        let explicit = self
            .routes
            .iter()
            .find(|route| route_matches(&route.prefix, path));
        let app = if self.apps {
            registry.route_with_prefix(path)
        } else {
            None
        };
        let use_app = match (&explicit, &app) {
            (Some(route), Some((app_prefix, _))) => app_prefix.len() > route.prefix.len(),
            (None, Some(_)) => true,
            _ => false,
        };
        if use_app && let Some((_, app)) = app {
            let metrics = self.metrics.app(&self.name, &app.name);
            return Ok((Target::App(app.clone()), metrics));
        }
        if let Some(Route {
            prefix,
            target,
            rate,
            metrics,
        }) = explicit
        {
            self.limit(rate.as_deref(), client, RateScope::Route)?;
            let target = match target {
                Configured::App(name) => Target::App(
                    registry
                        .get(name)
                        .cloned()
                        .ok_or(GatewayError::AppNotLoaded)?,
                ),
                Configured::Static(files) => Target::Static {
                    files: files.clone(),
                    prefix: prefix.clone(),
                },
                Configured::Redirect { to, status } => {
                    let rest = &path[prefix.trim_end_matches('/').len()..];
                    Target::Redirect {
                        to: redirect_location(to, rest),
                        status: *status,
                    }
                }
                Configured::Upstream(pool) => Target::Upstream(pool.clone()),
            };
            return Ok((target, metrics.clone()));
        }
        match &self.root {
            Some((files, prefix)) => {
                let target = Target::Static {
                    files: files.clone(),
                    prefix: prefix.clone(),
                };
                Ok((target, self.metrics.root.clone()))
            }
            None => Err(GatewayError::NotFound),
        }
    }
}

/// Where a redirect route to `to` sends a request for `rest`, the part of the path below
/// the route's prefix: `to` itself when nothing is below, else `to` and `rest` joined by
/// one slash. A target of "/" stays "/" rather than becoming empty, and the join never
/// starts with "//" (which a browser takes as another host) whatever slashes `rest`
/// begins with. A backslash, which browsers read as a slash, goes out encoded.
fn redirect_location(to: &str, rest: &str) -> String {
    if rest.is_empty() {
        return to.to_string();
    }
    let base = to.trim_end_matches('/');
    let rest = rest.trim_start_matches('/').replace('\\', "%5C");
    format!("{base}/{rest}")
}

/// The host a request is for, lower case and without port or trailing dot: the URI's
/// authority (HTTP/2, absolute-form) or else the Host header.
pub fn request_host<B>(req: &http::Request<B>) -> Option<Cow<'_, str>> {
    let host = match req.uri().authority() {
        Some(authority) => authority.host(),
        None => host_of(req.headers().get(http::header::HOST)?.to_str().ok()?)?,
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some(match host.bytes().any(|b| b.is_ascii_uppercase()) {
        true => Cow::Owned(host.to_ascii_lowercase()),
        false => Cow::Borrowed(host),
    })
}

/// The host part of a Host header value (`host`, `host:port`, `[v6]` or `[v6]:port`),
/// if the value is well formed. The host ends up in redirect locations, so anything
/// but a name or an address literal is refused rather than passed on.
fn host_of(value: &str) -> Option<&str> {
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => {
            let (literal, after) = rest.split_once(']')?;
            let ok = literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            (ok && !literal.is_empty()).then_some(())?;
            (&value[..literal.len() + 2], after.strip_prefix(':'))
        }
        None => {
            let (host, port) = match value.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (value, None),
            };
            let ok = host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            ok.then_some(())?;
            (host, port)
        }
    };
    if value.len() > host.len() && port.is_none() {
        return None; // "[::1]x": something after the literal that is not a port
    }
    match port {
        Some(port) if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) => None,
        _ => Some(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_keeps_a_lone_slash_and_never_points_at_another_host() {
        let cases = [
            ("/", "", "/"),
            ("/", "/", "/"),
            ("/", "/post/7", "/post/7"),
            ("/", "//evil.example/x", "/evil.example/x"),
            ("/", "/\\evil.example", "/%5Cevil.example"),
            ("/new/", "/post", "/new/post"),
            (
                "https://blog.foobar.com/new",
                "",
                "https://blog.foobar.com/new",
            ),
            (
                "https://blog.foobar.com/new",
                "/",
                "https://blog.foobar.com/new/",
            ),
            (
                "https://blog.foobar.com",
                "/post/7",
                "https://blog.foobar.com/post/7",
            ),
        ];
        for (to, rest, location) in cases {
            assert_eq!(redirect_location(to, rest), location, "{to} + {rest}");
        }
    }

    fn host(value: &str) -> Option<Cow<'static, str>> {
        let req = http::Request::get("/")
            .header("host", value)
            .body(())
            .unwrap();
        request_host(&req).map(|h| Cow::Owned(h.into_owned()))
    }

    #[test]
    fn host_header_forms() {
        assert_eq!(host("Example.COM").as_deref(), Some("example.com"));
        assert_eq!(host("example.com:8080").as_deref(), Some("example.com"));
        assert_eq!(host("example.com.").as_deref(), Some("example.com"));
        assert_eq!(host("[::1]:443").as_deref(), Some("[::1]"));
        assert_eq!(host("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(host("127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        for bad in [
            "",
            ".",
            "a b",
            "evil.com/x?",
            "user@host",
            "host:",
            "host:x1",
            "[::1",
            "[::1]x",
            "[]",
            "a:1:2",
        ] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
    }
}
